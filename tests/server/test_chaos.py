"""Chaos (issue #14): two ``usina server`` replicas on PostgreSQL drive 30 runs of a fan-out
pipeline submitted through the API while a replica is SIGKILLed and restarted 5 times at seeded
moments and step processes' artifact writes fail at a seeded rate. Every run finishes, every
step has exactly one successful attempt, every artifact's bytes match their sha256, and the
audit log and the events agree with the records exactly (each attempt, step and run change has
its one event). Bounded: the whole test gives up at ``BOUND`` seconds."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import free_port
from usina.engine.records import AttemptRecord, AttemptState, RunState, StepState
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores.platform import PlatformStore
from usina.stores.sql import SqlMetadataStore

SEED = 1414
RUNS = 30
KILLS = 5
WRITE_FAILURE_RATE = 0.15
LEASE_TTL = 3.0
BOUND = 420.0

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(int(BOUND) + 60)]
BRANCHES = ("b0", "b1", "b2", "b3")
OUTCOME = {AttemptState.SUCCEEDED: "attempt_succeeded", AttemptState.FAILED: "attempt_failed"}
FAULTS = Path(__file__).with_name("chaos_faults")

PIPELINE = """
from usina import Retry, pipeline, step

RETRY = Retry(infra=8, backoff=0.05)

@step(cache=False, retry=RETRY)
def prep(i: int) -> int:
    return i * 10

@step(cache=False, retry=RETRY)
def branch(x: int, k: int) -> int:
    return x + k

@step(cache=False, retry=RETRY)
def join(a: int, b: int, c: int, d: int) -> int:
    return a + b + c + d

@pipeline
def fanout(i: int = 0):
    x = prep(i)
    join(branch(x, 1), branch(x, 2), branch(x, 3), branch(x, 4))
"""


def _up(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _wait(check, timeout: float, what: str, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_replicas_survive_kills_and_failing_writes(tmp_path: Path, postgres_server) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    rng = random.Random(SEED)
    db = postgres_server.create_database()
    (tmp_path / "fanout.py").write_text(textwrap.dedent(PIPELINE))
    chaos_dir = tmp_path / "chaos"
    chaos_dir.mkdir()
    env = {
        **os.environ,
        "USINA_HOME": str(tmp_path / ".usina"),
        "USINA_DATABASE_URL": db,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]),
        "USINA_CHAOS_SEED": str(SEED),
        "USINA_CHAOS_DIR": str(chaos_dir),
    }
    env.pop("USINA_ARTIFACTS_URL", None)
    cli = [sys.executable, "-m", "usina.cli.main"]
    made = subprocess.run(
        [*cli, "token", "create", "--project", "*", "--role", "admin", "--name", "chaos"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    server_env = {**env, "USINA_CHAOS_WRITE_RATE": str(WRITE_FAILURE_RATE)}
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes] | None] = [None, None]

    def start(n: int) -> None:
        with open(tmp_path / f"server{n}.log", "ab") as log:
            procs[n] = subprocess.Popen(
                [
                    *cli,
                    "server",
                    "--port",
                    str(ports[n]),
                    "--pipelines",
                    str(tmp_path / "fanout.py"),
                    "--lease-ttl",
                    str(LEASE_TTL),
                    "--poll-interval",
                    "0.2",
                    "--max-runs",
                    "8",
                    "--max-parallel",
                    "3",
                ],
                env=server_env,
                cwd=tmp_path,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

    clients = [
        httpx.Client(base_url=f"http://127.0.0.1:{p}", headers=headers, timeout=30) for p in ports
    ]
    platform = PlatformStore(db)
    metadata = SqlMetadataStore(db)
    try:
        for n in range(2):
            start(n)
        for client in clients:
            _wait(lambda c=client: _up(c), 60, "the servers to start")

        run_ids: list[str] = []
        for i in range(RUNS):
            reply = clients[i % 2].post(
                "/api/v1/runs", json={"pipeline": "fanout", "params": {"i": i}}
            )
            assert reply.status_code == 201, reply.text
            run_ids.append(reply.json()["id"])

        def finished() -> int:
            return sum(1 for r in run_ids if metadata.get_run(r).state.finished)

        # Kill a replica at seeded moments (spread over the runs' progress), restart it.
        kills = []
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 2.0))
            victim = rng.randrange(2)
            proc = procs[victim]
            assert proc is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills.append((victim, finished()))
            time.sleep(rng.uniform(0.1, 0.8))
            start(victim)
            _wait(lambda c=clients[victim]: _up(c), 60, f"replica {victim} to restart")

        left = BOUND - (time.monotonic() - started)
        _wait(lambda: finished() == RUNS, left, "every run to finish", every=0.5)

        store = FsspecArtifactStore(str(tmp_path / ".usina" / "artifacts"))
        attempts_total = 0
        failed_writes = 0
        disagree: list[tuple[str, str, list[str], int]] = []  # what, which, events, detail
        for rid in run_ids:
            run = metadata.get_run(rid)
            assert run.state is RunState.SUCCEEDED, (rid, run.error)
            steps = metadata.get_steps(rid)
            assert len(steps) == 2 + len(BRANCHES), [s.node for s in steps]
            attempts = metadata.get_attempts(rid)
            attempts_total += len(attempts)
            for step in steps:
                assert step.state is StepState.SUCCEEDED
                mine = [a for a in attempts if a.node == step.node]
                good = [a for a in mine if a.state is AttemptState.SUCCEEDED]
                assert len(good) == 1, (rid, step.node, [(a.number, a.state) for a in mine])
                for ref in step.outputs:
                    data = store.get_bytes(ref.digest)  # verifies too; check it here as well
                    assert "sha256:" + hashlib.sha256(data).hexdigest() == ref.digest
            failed_writes += sum(
                1
                for a in attempts
                if a.state is AttemptState.FAILED and (chaos_dir / a.id).exists()
            )
            # Events agree with the attempt records exactly: the engine writes an attempt's
            # state change and its events in one transaction (``record_attempt``), so a kill
            # never leaves one without the other. Each attempt has one ``attempt_started``
            # and one outcome event matching its final state; every event names an attempt.
            # (Listed, then asserted empty after every run was checked.)
            events = metadata.list_events(rid)
            by_id: dict[str, AttemptRecord] = {a.id: a for a in attempts}
            assert all(e.attempt in by_id for e in events if e.attempt), (rid, events)
            for attempt in attempts:
                kinds = [e.kind for e in events if e.attempt == attempt.id]
                running = kinds.count("attempt_running")  # the queue wait, when observed
                kinds = [k for k in kinds if k != "attempt_running"]
                if kinds != ["attempt_started", OUTCOME[attempt.state]] or running > 1:
                    disagree.append((attempt.id, attempt.state.value, kinds, running))
            # Run and step events too: each is written with the change it reports.
            run_kinds = [e.kind for e in events if e.node is None]
            for kind in ("run_submitted", "run_started", "run_succeeded"):
                if run_kinds.count(kind) != 1:
                    disagree.append((rid, kind, run_kinds, 0))
            for step in steps:
                kinds = [e.kind for e in events if e.node == step.node and e.attempt is None]
                failed = sum(
                    1 for a in attempts if a.node == step.node and a.state is AttemptState.FAILED
                )
                # once per success (a step whose output was lost runs again: step_rerun), one
                # step_retry per failed attempt
                counts = (kinds.count("step_succeeded"), kinds.count("step_retry"))
                if counts != (1 + kinds.count("step_rerun"), failed):
                    disagree.append((rid, step.node, kinds, failed))
            join = next(s for s in steps if s.node == "join")
            assert store.get_bytes(join.outputs[0].digest)
        # The audit log holds each submission once.
        submits = [
            e
            for e in platform.list_audit(limit=10_000)
            if e.action == "run.submit" and e.outcome == "ok"
        ]
        assert sorted(e.target or "" for e in submits) == sorted(run_ids)
        assert failed_writes > 0, "no artifact write failed: the fault injection did not work"
        assert disagree == [], f"{len(disagree)} records' events disagree: {disagree[:10]}"
        print(
            f"\n{RUNS} runs, {attempts_total} attempts, {failed_writes} failed artifact writes, "
            f"kills (replica, runs finished then): {kills}, "
            f"records whose events disagree: {len(disagree)}, "
            f"took {time.monotonic() - started:.0f}s"
        )
    finally:
        platform.close()
        metadata.close()
        for client in clients:
            client.close()
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
