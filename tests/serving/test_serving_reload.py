"""Hot reload under load: the alias moves, traffic switches with zero failed requests, and a
broken new version leaves the old one serving (logged, counted, retried)."""

from __future__ import annotations

import re
import time

import orjson
from serving_support import LoadGenerator, get, row_request, start_server

POLL = 1.0


def test_hot_reload_under_load(registry, tmp_path):
    server = start_server(
        registry.tracking_uri,
        "models:/fraud_reload@champion",
        tmp_path,
        "--poll-interval",
        str(POLL),
    )
    load = None
    try:
        body = orjson.dumps(row_request(registry.x[0]))
        load = LoadGenerator(
            server.http, "/v2/models/fraud_reload/infer", body, 8, pause=0.002
        ).start()
        time.sleep(1.0)
        registry.set_alias("fraud_reload", "champion", "2")
        moved = time.perf_counter()
        deadline = moved + 30
        while time.perf_counter() < deadline:
            if any(r.version == "2" for r in load.results[-50:]):
                break
            time.sleep(0.1)
        first_v2 = min(r.done for r in load.results if r.version == "2")
        # The alias moved before `moved`; the switch needs one poll plus the load of version 2.
        assert first_v2 - moved < POLL + 15

        registry.set_alias("fraud_reload", "champion", "3")  # a broken version
        time.sleep(4 * POLL)
        results = load.stop()
        load = None
    finally:
        if load is not None:
            load.stop()
        registry.set_alias("fraud_reload", "champion", "1")  # as the other tests expect
        log = server.log()
        metrics = get(server.http, "/metrics")[1].decode() if server.proc.poll() is None else ""
        server.stop()

    assert results
    failed = [r for r in results if r.status != 200]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:3]}"
    v1 = [r for r in results if r.version == "1"]
    v2 = [r for r in results if r.version == "2"]
    assert v1
    assert v2
    # One atomic switch: no version-1 answer started after the first version-2 answer ended.
    assert max(r.sent for r in v1) < min(r.done for r in v2)
    assert all(abs(r.value - registry.pred_v1[0]) < 1e-6 for r in v1)
    assert all(abs(r.value - registry.pred_v2[0]) < 1e-6 for r in v2)
    # The broken version 3 never served; its failures were counted and logged.
    assert all(r.version in ("1", "2") for r in results)
    failures = re.search(
        r'usina_serving_model_load_failures_total\{model="fraud_reload"\} (\S+)', metrics
    )
    assert failures, metrics
    assert float(failures.group(1)) >= 1
    assert "failed to load" in log
    assert 'usina_serving_model_version_info{model="fraud_reload",version="2"} 1.0' in metrics
