"""Latency of the platform server's runs API with 10,000 runs in the database.

Fills a fresh database (PostgreSQL at 127.0.0.1:5432 by default, ``--sqlite`` for SQLite) with
10,000 runs of a three-step pipeline, serves the API over real HTTP on loopback (uvicorn, the
reconciler off), and prints p50/p99 of: the runs list's first page, a page deep in the list
(keyset cursor), a filtered first page, and getting one run.

    .venv/bin/python benchmarks/server_api.py [--runs 10000] [--requests 300] [--sqlite]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa
import uvicorn

from usina.engine.records import RunId, RunRecord, RunState, StepRecord, StepState
from usina.server.app import create_app
from usina.server.context import ServerContext
from usina.server.settings import ReconcilerSettings, ServerSettings
from usina.stores.platform import Role
from usina.stores.sql import SqlMetadataStore, normalize_url
from usina.stores.sql_rows import run_to_row, step_to_row
from usina.stores.sql_schema import runs, steps

PIPELINE = """
from usina import pipeline, step

@step
def load(n: int) -> list:
    return list(range(n))

@step
def train(rows: list, lr: float) -> float:
    return sum(rows) * lr

@step
def report(score: float) -> str:
    return str(score)

@pipeline
def bench(n: int = 10, lr: float = 0.1):
    report(train(load(n), lr))
"""


def postgres_database() -> tuple[str, object]:
    import psycopg

    admin = psycopg.connect(
        host="127.0.0.1", port=5432, user="postgres", dbname="test", autocommit=True
    )
    name = f"usina_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:5432/{name}", (admin, name)


def fill(url: str, plan: dict, count: int) -> list[str]:
    """``count`` runs spread over the last 30 days, a quarter of them in project "risk"."""
    SqlMetadataStore(url).close()  # migrate
    engine = sa.create_engine(normalize_url(url))
    rng = random.Random(7)
    now = time.time()
    ids = []
    states = [RunState.SUCCEEDED] * 8 + [RunState.FAILED, RunState.RUNNING]
    try:
        for start in range(0, count, 2000):
            run_rows, step_rows = [], []
            for i in range(start, min(count, start + 2000)):
                created = now - rng.uniform(0, 30 * 86400)
                rid = RunId(f"bench-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(created))}-{i:05d}")
                ids.append(rid)
                state = rng.choice(states)
                run_rows.append(
                    run_to_row(
                        RunRecord(
                            id=rid,
                            pipeline="bench",
                            plan=plan,
                            params=plan["params"],
                            state=state,
                            created_at=created,
                            started_at=created + 1,
                            finished_at=None if state is RunState.RUNNING else created + 60,
                            project="risk" if i % 4 == 0 else "default",
                        )
                    )
                )
                for node in ("load", "train", "report"):
                    step_rows.append(
                        step_to_row(
                            StepRecord(
                                run_id=rid,
                                node=node,
                                state=StepState.SUCCEEDED,
                                resources={"cpu": 1, "memory": "2Gi"},
                                attempts=1,
                                metrics={"auc": 0.9} if node == "train" else {},
                            )
                        )
                    )
            with engine.begin() as conn:
                conn.execute(sa.insert(runs), run_rows)
                conn.execute(sa.insert(steps), step_rows)
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("ANALYZE"))
    finally:
        engine.dispose()
    return ids


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="usina-bench-"))
    pipeline_file = work / "bench.py"
    pipeline_file.write_text(PIPELINE)
    cleanup = None
    if args.sqlite:
        url = f"sqlite:///{work}/usina.db"
    else:
        url, cleanup = postgres_database()
    try:
        settings = ServerSettings(
            database_url=url,
            artifacts_url=str(work / "artifacts"),
            attempts_dir=str(work / "attempts"),
            pipelines=(str(pipeline_file),),
            reconciler=ReconcilerSettings(enabled=False),
        )
        ctx = ServerContext.open(settings)
        plan = ctx.pipelines.get("bench").compile({}).to_json()
        t0 = time.perf_counter()
        ids = fill(url, plan, args.runs)
        print(
            f"database: {ctx.metadata.dialect}; {len(ids)} runs, {3 * len(ids)} steps "
            f"inserted in {time.perf_counter() - t0:.1f}s"
        )
        token, _ = ctx.platform.create_token("bench", {"*": Role.VIEWER})
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(ctx), host="127.0.0.1", port=port, log_level="warning", access_log=False
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

        # A cursor ~100 pages (5,000 runs) deep, found by walking the list once.
        cursor = None
        for _ in range(100):
            cursor = client.get(
                "/api/v1/runs", params={"limit": 50, "cursor": cursor} if cursor else {"limit": 50}
            ).json()["next_cursor"]

        def timed(make) -> list[float]:
            for _ in range(10):  # warm up
                make()
            out = []
            for _ in range(args.requests):
                t = time.perf_counter()
                res = make()
                out.append(time.perf_counter() - t)
                assert res.status_code == 200, res.text
            return out

        rng = random.Random(1)
        cases = {
            "list, first page (50)": lambda: client.get("/api/v1/runs", params={"limit": 50}),
            "list, page 100 (cursor)": lambda: client.get(
                "/api/v1/runs", params={"limit": 50, "cursor": cursor}
            ),
            "list, project+state filter": lambda: client.get(
                "/api/v1/runs", params={"limit": 50, "project": "risk", "state": "failed"}
            ),
            "get one run": lambda: client.get(f"/api/v1/runs/{rng.choice(ids)}"),
        }
        for name, make in cases.items():
            print(f"{name:30s} {percentiles(timed(make))}   ({args.requests} requests)")
        client.close()
        server.should_exit = True
        thread.join(10)
        ctx.close()
    finally:
        if cleanup is not None:
            admin, name = cleanup
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()


if __name__ == "__main__":
    main()
