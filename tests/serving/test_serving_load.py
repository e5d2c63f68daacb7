"""Overload and shutdown: a bounded queue sheds load with fast 503s while admitted requests keep
a bounded latency and memory stays flat; SIGTERM answers every request already accepted.

Both tests share one server: the overload soak runs first, then SIGTERM ends the server.
The soak is short here (SOAK seconds); ``benchmarks/serving.py --soak 120`` runs the long one.
"""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest
from serving_support import LoadGenerator, get, percentile, row_request, rss_bytes, start_server

SOAK = float(os.environ.get("USINA_SERVING_SOAK_S", "20"))
WARMUP = 5.0
CONNECTIONS = 160  # 10x the per-worker queue bound below


@pytest.fixture(scope="module")
def small_queue_server(registry, tmp_path_factory):
    srv = start_server(
        registry.tracking_uri,
        "models:/fraud@champion",
        tmp_path_factory.mktemp("logs"),
        "--max-queue",
        "16",
        "--max-batch-size",
        "8",
        "--grace-period",
        "15",
    )
    yield srv
    srv.stop()


def test_overload_sheds_with_503_and_memory_stays_flat(small_queue_server, registry):
    server = small_queue_server
    body = orjson.dumps(row_request(registry.x[0]))
    load = LoadGenerator(server.http, "/v2/models/fraud/infer", body, CONNECTIONS).start()
    try:
        time.sleep(WARMUP)
        rss_start = rss_bytes(server.proc.pid)
        start = time.perf_counter()
        live_latencies = []
        while time.perf_counter() - start < SOAK:
            t0 = time.perf_counter()
            assert get(server.http, "/v2/health/live", timeout=10)[0] == 200
            live_latencies.append(time.perf_counter() - t0)
            time.sleep(1.0)
        rss_end = rss_bytes(server.proc.pid)
    finally:
        results = load.stop()

    statuses = {r.status for r in results}
    assert statuses <= {200, 503}, statuses
    ok = [r.done - r.sent for r in results if r.status == 200]
    shed = [r.done - r.sent for r in results if r.status == 503]
    assert ok, "no request was admitted"
    assert shed, "the queue bound never shed load: the load was not an overload"
    # Generous bounds: the point is that they are bounded, not how fast this machine is.
    assert percentile(ok, 99) < 2.0
    assert percentile(shed, 99) < 2.0
    assert max(live_latencies) < 5.0
    growth = (rss_end - rss_start) / rss_start
    assert growth < 0.05, f"RSS grew {growth:.1%} ({rss_start} -> {rss_end}) over {SOAK}s"


def test_sigterm_answers_every_accepted_request(small_queue_server, registry):
    server = small_queue_server
    body = orjson.dumps(row_request(registry.x[0]))
    load = LoadGenerator(server.http, "/v2/models/fraud/infer", body, 32).start()
    time.sleep(2.0)
    signalled = time.perf_counter()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(30)
    stopped = time.perf_counter()
    results = load.stop()

    assert code == 0, server.log()
    assert stopped - signalled < 15 + 5  # within the grace period
    before = [r for r in results if r.sent < signalled - 0.01]
    assert len(before) > 100
    unanswered = [r for r in before if r.status is None]
    assert not unanswered, f"{len(unanswered)} requests sent before SIGTERM got no response"
    assert {r.status for r in before} <= {200, 503}
    assert "draining" in server.log()
