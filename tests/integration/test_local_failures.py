"""Real local processes produce each failure class and get the retry their policy says."""

from __future__ import annotations

import time

import pytest

from tests.integration.cli_helpers import Usina


@pytest.fixture
def usina(tmp_path):
    return Usina(tmp_path)


FAILING = """
from usina import Resources, Retry, pipeline, step
import time

@step
def fine() -> int:
    return 41

@step
def broken(x: int) -> int:
    rows = [1, 2, -3]
    for i, r in enumerate(rows):
        if r < 0:
            raise ValueError(f"negative amount in row {i}")
    return x

@pipeline
def p():
    broken(fine())
"""


def test_user_error_fails_fast_and_why_shows_the_traceback(usina):
    usina.write("p.py", FAILING)
    res = usina("run", "p.py")
    assert res.code == 1, res.out + res.err
    run = usina.last_run()
    assert run["state"] == "failed"
    why = usina("runs", "why", run["id"], "--output", "json").json()
    [attempt] = why["failed_attempts"]
    assert attempt["node"] == "broken"
    assert attempt["failure_class"] == "user_error"
    assert attempt["exit_code"] == 42
    assert "ValueError: negative amount in row 2" in attempt["message"]
    assert "line" in attempt["message"]
    assert "in broken" in attempt["message"]
    text = usina("runs", "why", run["id"])
    assert text.code == 1
    assert "user_error" in text.out
    assert "usina runs resume" in text.out


OOM = """
from usina import Resources, Retry, pipeline, step
import numpy as np

@step(resources=Resources(memory="150Mi"), retry=Retry(oom=1, oom_grow=4.0, backoff=0.1))
def hungry() -> int:
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    return int(block[:10].sum())

@pipeline
def p():
    hungry()
"""


def test_oom_is_classified_and_retried_with_more_memory(usina):
    usina.write("p.py", OOM)
    res = usina("run", "p.py", "--output", "json")
    assert res.code == 0, res.out + res.err
    run = res.json()
    assert run["state"] == "succeeded"
    shown = usina("runs", "show", run["id"], "--output", "json").json()
    attempts = shown["attempts"]
    assert [a["failure_class"] for a in attempts] == ["oom", None]
    assert [a["resources"]["memory"] for a in attempts] == ["150Mi", "600Mi"]
    assert attempts[0]["reason"] == "OOMKilled"
    assert "memory limit" in attempts[0]["message"]


TIMEOUT = """
from usina import Retry, pipeline, step
import time

@step(timeout=1, retry=Retry(timeout=1, backoff=0.1))
def slow() -> int:
    time.sleep(60)
    return 1

@pipeline
def p():
    slow()
"""


def test_timeout_kills_the_step_and_retries_as_asked(usina):
    usina.write("p.py", TIMEOUT)
    started = time.monotonic()
    res = usina("run", "p.py", "--output", "json")
    assert res.code == 1
    assert time.monotonic() - started < 30
    run = res.json()
    shown = usina("runs", "show", run["id"], "--output", "json").json()
    assert [a["failure_class"] for a in shown["attempts"]] == ["timeout", "timeout"]
    assert shown["steps"][0]["state"] == "failed"


CANCEL = """
from usina import pipeline, step
import time

@step
def first() -> int:
    return 1

@step
def sleepy(x: int) -> int:
    time.sleep(120)
    return x

@step
def after(x: int) -> int:
    return x

@pipeline
def p():
    after(sleepy(first()))
"""


def test_cancel_from_another_process_stops_the_run(usina):
    usina.write("p.py", CANCEL)
    proc = usina.popen("run", "p.py")
    try:
        deadline = time.monotonic() + 30
        run_id = None
        while time.monotonic() < deadline:
            res = usina("runs", "ls", "--output", "json")
            if res.code == 0 and res.json():
                run_id = res.json()[0]["id"]
                steps = usina("runs", "show", run_id, "--output", "json").json()["steps"]
                if any(s["node"] == "sleepy" and s["state"] == "running" for s in steps):
                    break
            time.sleep(0.2)
        assert run_id is not None
        res = usina("runs", "cancel", run_id)
        assert res.code == 0, res.err
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    shown = usina("runs", "show", run_id, "--output", "json").json()
    assert shown["state"] == "cancelled"
    states = {s["node"]: s["state"] for s in shown["steps"]}
    assert states == {"first": "succeeded", "sleepy": "cancelled", "after": "cancelled"}
    [attempt] = [a for a in shown["attempts"] if a["node"] == "sleepy"]
    assert attempt["failure_class"] == "cancelled"


def test_logs_of_an_attempt(usina):
    usina.write(
        "p.py",
        """
        from usina import pipeline, step

        @step
        def talk() -> int:
            print("hello from the step")
            import sys
            print("and its stderr", file=sys.stderr)
            return 1

        @pipeline
        def p():
            talk()
    """,
    )
    assert usina("run", "p.py").code == 0
    run = usina.last_run()
    res = usina("runs", "logs", run["id"], "talk")
    assert res.code == 0
    assert "hello from the step" in res.out
    assert "and its stderr" in res.out
    missing = usina("runs", "logs", run["id"], "nope")
    assert missing.code == 2
    assert "has no step 'nope'" in missing.err
