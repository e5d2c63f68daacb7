"""Runs the server drives are tracked in MLflow when their pipeline says so, and only then."""

from __future__ import annotations

import textwrap

from usina.engine.records import RunId, RunRecord, RunState
from usina.server.registry import PipelineRegistry
from usina.server.tracking import PipelineTrackers

PIPES = """
from usina import pipeline, step

@step
def one() -> int:
    return 1

@pipeline(tracking="mlflow", experiment="tracked-exp")
def tracked():
    one()

@pipeline
def plain():
    one()
"""


def _run(name: str, run_id: str) -> RunRecord:
    plan = {"pipeline": name, "params": {}, "nodes": [], "source": None, "sys_path": []}
    return RunRecord(RunId(run_id), name, plan, {}, RunState.RUNNING, 1.0, started_at=1.0)


def test_only_tracked_pipelines_reach_mlflow(tmp_path):
    from mlflow import MlflowClient

    path = tmp_path / "pipes.py"
    path.write_text(textwrap.dedent(PIPES))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trackers = PipelineTrackers(PipelineRegistry([str(path)]), uri)
    assert trackers.tracking()
    trackers.run_started(_run("tracked", "tracked-1"))
    trackers.run_started(_run("plain", "plain-1"))
    assert trackers.step_started(_run("plain", "plain-1"), "one") == {}
    env = trackers.step_started(_run("tracked", "tracked-1"), "one")
    assert env["MLFLOW_TRACKING_URI"] == uri
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tracked-exp")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], "tags.`usina.run_id` = 'tracked-1'")
    assert len(runs) == 2  # the parent and the nested run of step "one"
    everywhere = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`usina.run_id` = 'plain-1'"
    )
    assert everywhere == []
