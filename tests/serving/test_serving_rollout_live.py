"""Rollouts on a live server under load: a good canary is promoted (the alias moves in
MLflow), a challenger failing 5 % of its calls is rolled back, and a shadow never touches the
answers. Each decision is in the server's events (/rollout, the log, metrics) and in MLflow."""

from __future__ import annotations

import re
import sqlite3
import time

import orjson
from serving_support import LoadGenerator, get, row_request, start_server

PATH = "/v2/models/fraud_reload/infer"


def _status(server) -> dict:
    status, body = get(server.http, "/v2/models/fraud_reload/rollout")
    assert status == 200
    return orjson.loads(body)


def _run(registry, tmp_path, *args: str, until: str, timeout: float = 90):
    registry.set_alias("fraud_reload", "champion", "1")  # whatever an earlier test left
    server = start_server(
        registry.tracking_uri,
        "models:/fraud_reload@champion",
        tmp_path,
        "--poll-interval",
        "0",
        "--max-p99-ratio",
        "1000",  # latency noise on a shared machine must not decide these tests
        *args,
    )
    load = None
    try:
        body = orjson.dumps(row_request(registry.x[0]))
        load = LoadGenerator(server.http, PATH, body, 8, pause=0.002).start()
        deadline = time.monotonic() + timeout
        while _status(server)["state"] != until and time.monotonic() < deadline:
            time.sleep(0.2)
        decided = time.perf_counter()
        time.sleep(1.0)
        results = load.stop()
        load = None
        status = _status(server)
        metrics = get(server.http, "/metrics")[1].decode()
    finally:
        if load is not None:
            load.stop()
        server.stop()
    return status, results, decided, metrics, server.log()


def _version_tags(registry, version: str) -> dict[str, str]:
    with sqlite3.connect(registry.tracking_uri.removeprefix("sqlite:///")) as db:
        rows = db.execute(
            "SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?",
            ("fraud_reload", int(version)),
        ).fetchall()
    return dict(rows)


def _alias(registry) -> int:
    with sqlite3.connect(registry.tracking_uri.removeprefix("sqlite:///")) as db:
        (version,) = db.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
            ("fraud_reload", "champion"),
        ).fetchone()
    return int(version)


def test_a_good_canary_is_promoted(registry, tmp_path):
    try:
        status, results, _, metrics, log = _run(
            registry,
            tmp_path,
            *("--rollout", "canary", "--challenger", "models:/fraud_reload/2"),
            *("--rollout-steps", "30,100", "--rollout-step-seconds", "2", "--min-samples", "30"),
            until="promoted",
        )
        assert status["state"] == "promoted", status
        assert [d["action"] for d in status["decisions"]][-1] == "promote"
        assert "advance" in [d["action"] for d in status["decisions"]]
        assert _alias(registry) == 2  # the alias moved in MLflow
        tags = _version_tags(registry, "2")
    finally:
        registry.set_alias("fraud_reload", "champion", "1")  # as the other tests expect
    assert tags["rollout.outcome"] == "promote"
    assert orjson.loads(tags["rollout.01"])["action"] in ("advance", "hold")
    assert not [r for r in results if r.status != 200]
    assert {r.version for r in results} == {"1", "2"}
    assert all(abs(r.value - registry.pred_v2[0]) < 1e-6 for r in results if r.version == "2")
    assert re.search(
        r'usina_serving_rollout_decisions_total\{action="promote",model="fraud_reload"\} 1\.0',
        metrics,
    ), metrics
    assert "rollout decision" in log


def test_a_canary_failing_5_percent_is_rolled_back(registry, tmp_path):
    status, results, decided, _, log = _run(
        registry,
        tmp_path,
        *("--rollout", "canary", "--challenger", "models:/fraud_reload/4"),
        *("--rollout-steps", "50,100", "--rollout-step-seconds", "60", "--min-samples", "100"),
        until="rolled_back",
    )
    assert status["state"] == "rolled_back", status
    last = status["decisions"][-1]
    assert last["action"] == "rollback"
    assert "error rate" in last["reason"]
    # Until the rollback some challenger answers failed; after it, the champion answers all.
    after = [r for r in results if r.sent > decided]
    assert after
    assert all(r.status == 200 and r.version == "1" for r in after)
    assert _version_tags(registry, "4")["rollout.outcome"] == "rollback"
    assert _alias(registry) == 1
    assert "rollout decision" in log


def test_a_shadow_never_changes_the_answers(registry, tmp_path):
    # The shadowed challenger fails 5 % of its calls: measured, rolled back, never seen.
    status, results, _, _, _ = _run(
        registry,
        tmp_path,
        *("--rollout", "shadow", "--challenger", "models:/fraud_reload/4"),
        *("--rollout-steps", "100", "--rollout-step-seconds", "60", "--min-samples", "100"),
        until="rolled_back",
    )
    assert status["state"] == "rolled_back", status
    assert status["decisions"][-1]["measurements"]["challenger_requests"] >= 100
    assert results
    assert all(r.status == 200 and r.version == "1" for r in results)
    assert all(abs(r.value - registry.pred_v1[0]) < 1e-6 for r in results)
