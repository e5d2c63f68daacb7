"""Two ``usina server`` processes on one PostgreSQL database share 50 runs; one is killed
with SIGKILL half-way, and the other finishes every run, each step exactly once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from usina.engine.records import AttemptState, RunState, StepState
from usina.stores.platform import PlatformStore
from usina.stores.sql import SqlMetadataStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RUNS = 50
LEASE_TTL = 3.0

PIPELINE = """
from usina import pipeline, step

@step(cache=False)
def prep(i: int) -> int:
    return i * 2

@step(cache=False)
def left(x: int) -> int:
    return x + 1

@step(cache=False)
def right(x: int) -> int:
    return x - 1

@step(cache=False)
def join(a: int, b: int) -> int:
    return a + b

@pipeline
def quick(i: int = 0):
    x = prep(i)
    join(left(x), right(x))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_two_replicas_finish_every_run_when_one_is_killed(tmp_path: Path, postgres_server):
    db = postgres_server.create_database()
    (tmp_path / "quick.py").write_text(textwrap.dedent(PIPELINE))
    env = {
        **os.environ,
        "USINA_HOME": str(tmp_path / ".usina"),
        "USINA_DATABASE_URL": db,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("USINA_ARTIFACTS_URL", None)
    cli = [sys.executable, "-m", "usina.cli.main"]
    made = subprocess.run(
        [*cli, "token", "create", "--project", "*", "--role", "admin", "--name", "test"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}

    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for n in range(2):
            port = free_port()
            with open(tmp_path / f"server{n}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            *cli,
                            "server",
                            "--port",
                            str(port),
                            "--pipelines",
                            str(tmp_path / "quick.py"),
                            "--lease-ttl",
                            str(LEASE_TTL),
                            "--poll-interval",
                            "0.2",
                            "--max-runs",
                            "10",
                            "--max-parallel",
                            "2",
                        ],
                        env=env,
                        cwd=tmp_path,
                        stdout=log,
                        stderr=log,
                        stdin=subprocess.DEVNULL,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        clients = [httpx.Client(base_url=u, headers=headers, timeout=30) for u in urls]

        def up(client: httpx.Client) -> bool:
            try:
                return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        for client in clients:
            wait_until(lambda c=client: up(c), 60, "the servers to start")

        run_ids = []
        for i in range(RUNS):
            res = clients[i % 2].post(
                "/api/v1/runs", json={"pipeline": "quick", "params": {"i": i}}
            )
            assert res.status_code == 201, res.text
            run_ids.append(res.json()["id"])

        platform = PlatformStore(db)
        metadata = SqlMetadataStore(db)
        try:
            victim = procs[0]
            victim_tag = f":{victim.pid}:"

            def victim_busy_and_some_done() -> set[str] | None:
                done = sum(
                    1 for r in metadata.list_runs(limit=RUNS) if r.state is RunState.SUCCEEDED
                )
                held = {rid for rid, o in platform.lease_holders().items() if victim_tag in o}
                return held if done >= 5 and held else None

            held_by_victim = wait_until(victim_busy_and_some_done, 90, "runs to be under way")
            owners = {o.split(":")[1] for o in platform.lease_holders().values() if o}
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            killed_at = time.monotonic()

            def all_finished() -> bool:
                return all(metadata.get_run(r).state.finished for r in run_ids)

            wait_until(all_finished, 120, "the surviving server to finish every run", every=0.5)
            took = time.monotonic() - killed_at

            for rid in run_ids:
                run = metadata.get_run(rid)
                assert run.state is RunState.SUCCEEDED, (rid, run.error)
                steps = metadata.get_steps(rid)
                assert {s.node for s in steps} == {"prep", "left", "right", "join"}
                attempts = metadata.get_attempts(rid)
                for step in steps:
                    assert step.state is StepState.SUCCEEDED
                    mine = [a for a in attempts if a.node == step.node]
                    good = [a for a in mine if a.state is AttemptState.SUCCEEDED]
                    assert len(good) == 1, (rid, step.node, mine)
                    # Attempts the killed server had started were adopted, not re-run.
                    assert len(mine) == 1, (rid, step.node, mine)
            # The runs the killed server held were finished by the other one.
            assert held_by_victim <= set(run_ids)

            # ...and the survivor let go of the leases of the runs it finished (on the pass after
            # a run ends, so wait a little). A run the victim finished in the instant before the
            # kill, before its next pass released the lease, keeps the dead replica's name until
            # that lease expires: nobody needs a finished run's lease, so it is not waited for.
            def survivor_leases() -> dict[str, str | None]:
                return {
                    r: owner
                    for r in run_ids
                    if (owner := metadata.get_run(r).lease_owner) and victim_tag not in owner
                }

            try:
                wait_until(
                    lambda: not survivor_leases(), 30, "the leases of finished runs to be released"
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}: still held {survivor_leases()}") from None
            listed = clients[1].get("/api/v1/runs", params={"limit": 200}).json()["items"]
            assert {r["id"] for r in listed} == set(run_ids)
            assert {r["state"] for r in listed} == {"succeeded"}
            print(
                f"\n{RUNS} runs; replicas seen holding leases: {sorted(owners)}; "
                f"victim held {len(held_by_victim)}; the rest took {took:.1f}s after the kill"
            )
        finally:
            platform.close()
            metadata.close()
            for client in clients:
                client.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
