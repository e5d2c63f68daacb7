"""The profile commands: ``advise``, ``runs top``, the ``runs show`` figures, the OOM curve."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from tests.integration.cli_helpers import Usina
from tests.profile.factory import GI, MI, World, make_profile
from tests.profile.support import attempts_of, profile_of, settings_of
from usina.cli.profile_cmds import (
    advise,
    oom_curve_lines,
    oom_curves,
    profile_table,
    profiles_json,
    runs_top,
)
from usina.stores.artifacts import FsspecArtifactStore

GROWING_OOM = """
import time
from usina import Resources, Retry, pipeline, step

@step(resources=Resources(memory="150Mi"), retry=Retry(oom=1, oom_grow=4.0, backoff=0.1))
def hungry() -> int:
    blocks = []
    for _ in range(40):                      # 10 MiB every 50 ms, up to 400 MiB
        blocks.append(b"\\x03" * (10 * 2**20))
        time.sleep(0.05)
    return len(blocks)

@pipeline
def p():
    hungry()
"""


def _app() -> typer.Typer:
    """The commands registered the way ``usina.cli.main`` registers them."""
    app = typer.Typer()
    runs = typer.Typer()
    app.command("advise")(advise)
    runs.command("top")(runs_top)
    app.add_typer(runs, name="runs")
    return app


@pytest.fixture
def usina(tmp_path, monkeypatch):
    u = Usina(tmp_path)
    u.env["USINA_PROFILE_INTERVAL"] = "0.05"
    monkeypatch.setenv("USINA_HOME", u.env["USINA_HOME"])
    return u


def test_an_oom_leaves_its_memory_curve_and_advice_says_what_would_have_sufficed(usina):
    usina.write("p.py", GROWING_OOM)
    res = usina("run", "p.py")
    assert res.code == 0, res.out + res.err
    run = usina.last_run()
    killed, retried = attempts_of(usina, run["id"])
    assert killed.failure_class is not None
    assert killed.failure_class.value == "oom"
    found = profile_of(usina, killed.id)
    assert found.whole is not None
    assert not found.whole.final  # written while it ran: the kill left no time for more
    peak = found.whole.summary.memory
    assert peak is not None
    assert peak.peak > 100 * MI  # it got close to its 150Mi limit before the kill

    artifacts = FsspecArtifactStore(settings_of(usina).artifacts_url)
    curves = oom_curves(artifacts, [killed, retried])
    assert list(curves) == [killed.id]
    lines = curves[killed.id]
    assert "limit 150Mi" in lines[0]
    assert "before it was killed" in lines[0]
    bars = lines[1:]
    assert len(bars) >= 5
    assert all("|" in line for line in bars)  # the limit line
    shares = [int(line.rsplit("(", 1)[1].rstrip("%)")) for line in bars]
    assert shares[-1] >= 60  # the curve climbs towards the limit
    assert shares[-1] > shares[0]

    result = CliRunner().invoke(_app(), ["advise", "p", "--output", "json"])
    assert result.exit_code == 0, result.output
    [step] = json.loads(result.output)
    assert step["step"] == "hungry"
    [oom] = step["oom"]
    retried_peak = profile_of(usina, retried.id).memory_peak()
    assert retried_peak is not None
    assert oom["would_suffice"] == pytest.approx(retried_peak * 1.15, abs=MI)
    assert oom["would_suffice"] > 150 * MI
    text = CliRunner().invoke(_app(), ["advise", "p"])
    assert text.exit_code == 0, text.output
    assert "would have sufficed" in text.output
    assert "hungry" in text.output


def test_oom_curve_lines_cover_the_last_minutes_only():
    minutes = [float(i) * MI for i in range(600)]  # 10 minutes at 1 s, growing 1 MiB/s
    profile = make_profile("a", minutes, request=600 * MI, final=False)
    lines = oom_curve_lines(profile, minutes=3, rows=12)
    assert lines[0].startswith("memory over the last 3m00s of the attempt, limit 600Mi")
    assert len(lines) == 1 + 12 + 1 or len(lines) == 1 + 12  # 181 points in 12-13 rows
    first = lines[1]
    assert "-3m00s" in first
    value = int(first.split("| ")[1].split("Mi")[0])
    assert 419 <= value <= 435  # the largest of the first merged points, 3 minutes before the end
    assert lines[-1].endswith("599Mi (100%)")


def test_runs_show_figures_and_json():
    world = World()
    run = world.run("train", [{"step": "fit", "memory": "4Gi", "peak": GI}])
    attempts = world.metadata.get_attempts(run.id)
    [item] = profiles_json(world.artifacts, attempts)
    assert item["node"] == "fit"
    assert item["memory"]["peak"] == GI
    assert item["memory"]["requested"] == 4 * GI
    assert item["cpu"]["requested"] == 1.0
    table = profile_table(world.artifacts, attempts)
    assert table is not None
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "1.00Gi / " in text
    assert "/ 4.00Gi" in text
    assert profile_table(world.artifacts, []) is None


def test_runs_top_shows_the_running_attempts_latest_sample(tmp_path, monkeypatch):
    from usina.cli.settings import Settings
    from usina.engine.profiles import profile_key
    from usina.engine.records import (
        AttemptRecord,
        AttemptState,
        RunRecord,
        RunState,
        StepRecord,
        StepState,
    )
    from usina.stores.sql import SqlMetadataStore

    monkeypatch.setenv("USINA_HOME", str(tmp_path / ".usina"))
    settings = Settings.from_env()
    (tmp_path / ".usina").mkdir()
    store = SqlMetadataStore(settings.database_url)
    artifacts = FsspecArtifactStore(settings.artifacts_url)
    run = RunRecord(
        id="r-1", pipeline="p", plan={}, params={}, state=RunState.RUNNING, created_at=1.0
    )  # type: ignore[arg-type]
    store.create_run(run, [StepRecord("r-1", "fit", StepState.RUNNING, {})])  # type: ignore[arg-type]
    store.save_attempt(
        AttemptRecord(
            id="r-1-fit-1",
            run_id="r-1",
            node="fit",
            number=1,
            state=AttemptState.RUNNING,  # type: ignore[arg-type]
            resources={"memory": "2Gi"},
            started_at=1.0,
        )
    )
    store.close()
    profile = make_profile("r-1-fit-1", [0.5 * GI, GI], request=2.0 * GI, final=False)
    artifacts.write_record(profile_key("r-1-fit-1"), json.dumps(profile.to_json()).encode())
    result = CliRunner().invoke(_app(), ["runs", "top", "r-1", "--once"])
    assert result.exit_code == 0, result.output
    assert "fit" in result.output
    assert "1.00Gi" in result.output
    assert "50%" in result.output  # of its 2Gi request
    as_json = CliRunner().invoke(_app(), ["runs", "top", "r-1", "-o", "json"])
    data = json.loads(as_json.output)
    assert data["finished"] is False
    assert data["attempts"][0]["memory"]["peak"] == GI
