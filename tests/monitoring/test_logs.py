"""JSON log lines carry the ids; the CLI picks the format; ``usina run --metrics-port`` serves
the pipeline metrics while the run goes."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import urllib.request

from tests.integration.cli_helpers import Usina
from usina.monitoring.logs import JsonFormatter, log_context


def _record(msg, *args, **extra):
    record = logging.LogRecord("usina.engine", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_context_and_extra_ids():
    fmt = JsonFormatter()
    with log_context(run_id="r-1", step="train"):
        line = fmt.format(_record("attempt %s failed", "r-1-train-2", attempt_id="r-1-train-2"))
    doc = json.loads(line)
    assert doc["message"] == "attempt r-1-train-2 failed"
    assert doc["level"] == "warning"
    assert doc["logger"] == "usina.engine"
    assert (doc["run_id"], doc["step"], doc["attempt_id"]) == ("r-1", "train", "r-1-train-2")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
    outside = json.loads(fmt.format(_record("plain", request_id="q-9")))
    assert "run_id" not in outside
    assert outside["request_id"] == "q-9"


def test_exceptions_are_one_json_line():
    fmt = JsonFormatter()
    record = _record("failed")
    try:
        raise ValueError("bad row")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = fmt.format(record)
    assert "\n" not in line
    assert "ValueError: bad row" in json.loads(line)["exc"]


SLOW = """
from usina import Resources, pipeline, step
import time

@step(resources=Resources(gpus=1))
def train() -> int:
    time.sleep(4)
    return 1

@pipeline
def slow():
    train()
"""


def test_run_serves_metrics_while_it_runs_and_logs_json(tmp_path):
    usina = Usina(tmp_path)
    usina.env.update({"USINA_GPUS": "0", "USINA_LOG_FORMAT": "json", "USINA_LOG_LEVEL": "INFO"})
    usina.write("p.py", SLOW)
    proc = usina.popen("run", "p.py", "--metrics-port", "0", "--label", "team=risk")
    log = tmp_path / "popen.log"
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            found = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.1)
        assert url, log.read_text()
        seen = ""
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=5) as resp:
                seen = resp.read().decode()
            if 'usina_gpus_in_use{pipeline="slow",team="risk"} 1.0' in seen:
                break
            time.sleep(0.2)
        assert 'usina_steps_running{pipeline="slow",team="risk"} 1.0' in seen, seen
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    assert lines, text
    assert all({"ts", "level", "logger", "message"} <= set(x) for x in lines)
    # The engine's lines about the run's attempts carry its ids.
    launched = [x for x in lines if x["message"].startswith("launched attempt")]
    assert launched, text
    assert launched[0]["run_id"].startswith("slow-")
    assert launched[0]["step"] == "train"
