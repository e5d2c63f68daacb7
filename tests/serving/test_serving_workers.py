"""``--workers N``: when the alias moves, no worker serves the new version before every worker
has loaded it, all switch within moments of each other, and no request fails meanwhile."""

from __future__ import annotations

import re
import time
from datetime import datetime

import orjson
from serving_support import LoadGenerator, row_request, start_server

POLL = 0.5
WORKERS = 3
_STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \[(\d+)\] usina\.serving\.repository: "


def _times(log: str, message: str) -> dict[int, float]:
    """When each worker (by pid) logged ``message``."""
    out: dict[int, float] = {}
    for stamp, pid, _ in re.findall(_STAMP + "(" + message + ")", log):
        out[int(pid)] = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return out


def test_workers_switch_versions_together_under_load(registry, tmp_path):
    registry.set_alias("fraud_reload", "champion", "1")  # whatever an earlier test left
    server = start_server(
        registry.tracking_uri,
        "models:/fraud_reload@champion",
        tmp_path,
        "--workers",
        str(WORKERS),
        "--poll-interval",
        str(POLL),
        ready_timeout=300,
    )
    load = None
    try:
        body = orjson.dumps(row_request(registry.x[0]))
        path = "/v2/models/fraud_reload/infer"
        load = LoadGenerator(server.http, path, body, 12, pause=0.002).start()
        time.sleep(1.0)
        registry.set_alias("fraud_reload", "champion", "2")
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            if any(r.version == "2" for r in load.results[-50:]):
                break
            time.sleep(0.1)
        time.sleep(1.0)
        results = load.stop()
        load = None
    finally:
        if load is not None:
            load.stop()
        registry.set_alias("fraud_reload", "champion", "1")  # as the other tests expect
        server.stop()
        log = server.log()

    failed = [r for r in results if r.status != 200]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:3]}"
    v1 = [r for r in results if r.version == "1"]
    v2 = [r for r in results if r.version == "2"]
    assert v1
    assert v2
    # Each answer comes from one version, whole.
    assert all(abs(r.value - registry.pred_v1[0]) < 1e-6 for r in v1)
    assert all(abs(r.value - registry.pred_v2[0]) < 1e-6 for r in v2)

    ready = _times(log, "version 2 of fraud_reload is loaded; waiting for every worker")
    switched = _times(log, "switched fraud_reload from version 1 to 2")
    assert len(ready) == WORKERS, log
    assert set(switched) == set(ready), log
    # No worker served version 2 before every worker had loaded it...
    assert min(switched.values()) >= max(ready.values()), (ready, switched)
    # ...and then they all switched within moments of each other.
    assert max(switched.values()) - min(switched.values()) < 0.5, switched
