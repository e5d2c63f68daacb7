"""MLflow lineage of a pipeline with fan-in, against MLflow's own SQLite store: only the steps
that read no step's output are the run's data sources (``usina.data_hash.<node>``); a step
whose one input is a list (or dict) of upstream outputs is not a source."""

from __future__ import annotations

import hashlib
import json

from tests.integration.cli_helpers import Usina

FAN_IN = """
from usina import pipeline, step

@step
def part(i: int) -> int:
    return i * 10

@step
def total(parts: list) -> int:
    return sum(parts)

@step
def pick(by: dict) -> int:
    return by["high"] - by["low"]

@pipeline(tracking="mlflow", experiment="fan")
def fan():
    parts = [part(i, name=f"part{i}") for i in range(3)]
    total(parts)
    pick({"low": parts[0], "high": parts[2]})
"""


def test_fan_in_steps_are_not_data_sources(tmp_path):
    from mlflow import MlflowClient

    u = Usina(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    u.env["MLFLOW_TRACKING_URI"] = uri
    u.write("fan.py", FAN_IN)
    res = u("run", "fan.py", "-o", "json", timeout=600)
    assert res.code == 0, res.out[-3000:] + res.err[-3000:]
    run = res.json()
    digests = {s["node"]: s["outputs"][0]["digest"] for s in run["steps"]}

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fan")
    assert exp is not None
    parents = client.search_runs(
        [exp.experiment_id], f"tags.`usina.kind` = 'run' and tags.`usina.run_id` = '{run['id']}'"
    )
    assert len(parents) == 1
    tags = parents[0].data.tags
    sources = {
        k.removeprefix("usina.data_hash."): v
        for k, v in tags.items()
        if k.startswith("usina.data_hash.")
    }
    assert sources == {name: digests[name] for name in ("part0", "part1", "part2")}
    text = json.dumps(dict(sorted(sources.items())))
    assert tags["usina.data_hash"] == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
