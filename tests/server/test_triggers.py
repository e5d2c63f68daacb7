"""The server's trigger watcher: each kind fires exactly once per cause — an alias moved in a real
MLflow registry, an upstream run that succeeded, an object version under a prefix — with the
cause in the run's labels, parameters and events; nothing for the state at creation; nothing
twice after a watcher restart, after a watcher SIGKILLed between creating a run and recording
it, or with two watchers racing on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from usina.engine.engine import Engine
from usina.engine.records import RunState
from usina.scheduling.triggers import Trigger, TriggerKind
from usina.server.models import MlflowModels
from usina.server.registry import PipelineRegistry
from usina.server.triggers import TriggerWatcher, registry_aliases
from usina.stores.sql import SqlMetadataStore
from usina.stores.triggers import Firing, TriggerStore
from usina.testing import InMemoryArtifactStore
from usina.testing.backend import FakeBackend
from usina.testing.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0
PIPELINES = textwrap.dedent(
    """
    from usina import pipeline, step

    @step
    def echo(value: str) -> str:
        return value

    @pipeline
    def deploy(model_version: str = "", model_name: str = "", target: str = "prod"):
        echo(model_version)

    @pipeline
    def train(rows: int = 10):
        echo(str(rows))

    @pipeline
    def score(upstream_run: str = ""):
        echo(upstream_run)

    @pipeline
    def ingest(object_path: str = "", object_version: str = ""):
        echo(object_path)
    """
)


@dataclass
class Replica:
    watcher: TriggerWatcher
    store: TriggerStore
    engine: Engine
    clock: FakeClock

    def runs(self, project: str = "fraud") -> list[Any]:
        return self.engine.metadata.list_runs(limit=100, project=project)


_OPEN: list[TriggerStore | SqlMetadataStore] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def make(url: str, folder: Path, registry: str | None = None) -> Replica:
    """One replica's watcher on database ``url`` (and MLflow registry ``registry``)."""
    folder.mkdir(parents=True, exist_ok=True)
    pipe = folder / "pipes.py"
    pipe.write_text(PIPELINES)
    artifacts = InMemoryArtifactStore()
    clock = FakeClock(T0)
    engine = Engine(
        backend=FakeBackend(artifacts, clock), metadata=SqlMetadataStore(url),
        artifacts=artifacts, clock=clock,
    )  # fmt: skip
    store = TriggerStore(url)
    aliases = registry_aliases(MlflowModels(registry)) if registry else None
    watcher = TriggerWatcher(store, PipelineRegistry([str(pipe)]), engine, aliases, clock=clock.now)
    _OPEN.extend([store, engine.metadata])
    return Replica(watcher, store, engine, clock)


def trigger(kind: TriggerKind, runs: str, **spec: str) -> Trigger:
    return Trigger(name=f"on-{kind.value}", project="fraud", pipeline=runs, kind=kind,
                   spec=spec, params={})  # fmt: skip


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/usina.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database the replicas may share: SQLite (one file) and PostgreSQL (a database of
    this test's own: the session's is shared, and these tests count runs)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_server").create_database())
    return f"sqlite:///{tmp_path}/usina.db"


@pytest.fixture
def registry(tmp_path: Path) -> tuple[str, Any]:
    """A real MLflow registry (SQLite) with model ``fraud``, versions 1-3, champion -> 1."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("fraud")
    for _ in range(3):
        client.create_model_version("fraud", source=str(tmp_path))
    client.set_registered_model_alias("fraud", "champion", "1")
    return uri, client


def events(replica: Replica, run_id: str) -> list[str]:
    return [
        e.message for e in replica.engine.metadata.list_events(run_id) if e.kind == "run_triggered"
    ]


def test_an_alias_fires_once_per_move(
    sqlite_url: str, tmp_path: Path, registry: tuple[str, Any]
) -> None:
    uri, mlflow = registry
    one = make(sqlite_url, tmp_path / "a", uri)
    one.watcher.create(trigger(TriggerKind.ALIAS, "deploy", model="fraud", alias="champion"))
    assert one.watcher.run_once() == []  # champion -> 1 at creation: the baseline
    mlflow.set_registered_model_alias("fraud", "champion", "2")
    (first,) = one.watcher.run_once()
    run = one.engine.metadata.get_run(first)
    assert run.params == {"model_version": "2", "model_name": "fraud", "target": "prod"}
    assert run.labels == {"trigger": "on-alias", "trigger-cause": "fraud@champion=2"}
    assert events(one, first) == ["trigger on-alias (alias): fraud@champion=2"]
    assert one.watcher.run_once() == []
    two = make(sqlite_url, tmp_path / "b", uri)  # a restarted replica
    assert two.watcher.run_once() == []
    mlflow.set_registered_model_alias("fraud", "champion", "1")  # a rollback to the baseline
    (second,) = two.watcher.run_once()
    assert one.engine.metadata.get_run(second).params["model_version"] == "1"
    mlflow.set_registered_model_alias("fraud", "champion", "2")  # forward again: a new move
    (third,) = one.watcher.run_once()
    assert len({first, second, third}) == 3
    assert one.watcher.run_once() + two.watcher.run_once() == []
    assert len(one.runs()) == 3
    shown = [f.shown for f in one.store.firings("fraud", "on-alias")]
    assert shown == ["fraud@champion=2", "fraud@champion=1", "fraud@champion=2"]


def test_an_upstream_success_fires_once_with_its_run_id(sqlite_url: str, tmp_path: Path) -> None:
    one = make(sqlite_url, tmp_path / "a")
    meta = one.engine.metadata

    def succeed(at: float) -> str:
        run = one.engine.submit(one.watcher.pipelines.get("train").compile({}), project="fraud")
        meta.save_run(replace(run, state=RunState.SUCCEEDED, finished_at=at))
        return run.id

    before = succeed(T0 - 5)  # finished before the trigger existed: never fires
    one.watcher.create(trigger(TriggerKind.RUN_SUCCEEDED, "score", pipeline="train"))
    assert one.watcher.run_once() == []
    failed = one.engine.submit(one.watcher.pipelines.get("train").compile({}), project="fraud")
    meta.save_run(replace(failed, state=RunState.FAILED, finished_at=T0 + 1))
    upstream = [succeed(T0 + 2), succeed(T0 + 3)]
    created = one.watcher.run_once()
    assert [meta.get_run(r).params["upstream_run"] for r in created] == upstream
    assert before not in {meta.get_run(r).params["upstream_run"] for r in created}
    assert meta.get_run(created[0]).labels["trigger-cause"] == upstream[0]
    assert events(one, created[0]) == [f"trigger on-run-succeeded (run-succeeded): {upstream[0]}"]
    assert one.watcher.run_once() == []
    two = make(sqlite_url, tmp_path / "b")
    assert two.watcher.run_once() == []
    assert len([r for r in one.runs() if r.pipeline == "score"]) == 2


def test_new_objects_fire_once_per_version(sqlite_url: str, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    (landing / "day=1").mkdir(parents=True)
    (landing / "day=1" / "old.csv").write_text("a,b\n")
    one = make(sqlite_url, tmp_path / "a")
    one.watcher.create(trigger(TriggerKind.OBJECTS, "ingest", prefix=str(landing)))
    assert one.watcher.run_once() == []  # old.csv is the baseline
    (landing / "day=2").mkdir()
    (landing / "day=2" / "new.csv").write_text("a,b\n1,2\n")
    (first,) = one.watcher.run_once()
    run = one.engine.metadata.get_run(first)
    assert run.params["object_path"] == str(landing / "day=2" / "new.csv")
    assert run.labels["trigger-cause"].startswith(str(landing / "day=2" / "new.csv") + "@")
    assert events(one, first)[0].startswith("trigger on-objects (objects): ")
    assert one.watcher.run_once() == []
    two = make(sqlite_url, tmp_path / "b")
    assert two.watcher.run_once() == []
    (landing / "day=2" / "new.csv").write_text("a,b\n1,2\n3,4\n")  # a new version
    (second,) = two.watcher.run_once()
    assert second != first
    assert one.watcher.run_once() == []
    assert len(one.runs()) == 2


def test_a_paused_trigger_fires_what_changed_once_it_resumes(
    sqlite_url: str, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    one = make(sqlite_url, tmp_path / "a")
    one.watcher.create(trigger(TriggerKind.OBJECTS, "ingest", prefix=str(landing)))
    one.store.set_paused("fraud", "on-objects", True)
    (landing / "a.csv").write_text("1")
    assert one.watcher.run_once() == []
    one.store.set_paused("fraud", "on-objects", False)
    assert len(one.watcher.run_once()) == 1
    assert one.watcher.run_once() == []


def test_a_deleted_trigger_made_again_starts_afresh(sqlite_url: str, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text("1")
    one = make(sqlite_url, tmp_path / "a")
    made = one.watcher.create(trigger(TriggerKind.OBJECTS, "ingest", prefix=str(landing)))
    (landing / "b.csv").write_text("2")
    (first,) = one.watcher.run_once()
    one.store.delete("fraud", "on-objects")
    # a pass that was under way records a cause of the deleted trigger
    (key,) = [o.key for o in one.watcher.objects(str(landing)) if o.path.endswith("b.csv")]
    one.store.record(Firing("fraud", "on-objects", key, key, "exists", first, T0))
    one.clock.advance(60)
    again = one.watcher.create(trigger(TriggerKind.OBJECTS, "ingest", prefix=str(landing)))
    assert again.created_at > made.created_at
    assert one.watcher.run_once() == []  # a.csv and b.csv are its baseline
    (landing / "c.csv").write_text("3")
    (second,) = one.watcher.run_once()
    assert second != first


CRASHING_REPLICA = """
import sys
from pathlib import Path
sys.path[:0] = [{root!r}, {src!r}]
from tests.server.test_triggers import make
replica = make({url!r}, Path({folder!r}), {registry!r})
replica.watcher.run_once()
print("survived")
"""


def crash(url: str, folder: Path, registry: str | None, at: str) -> None:
    code = CRASHING_REPLICA.format(
        root=str(ROOT), src=str(ROOT / "src"), url=url, folder=str(folder), registry=registry
    )
    env = {**os.environ, "USINA_TEST_CRASH_AT": at}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == -9, done.stdout + done.stderr  # SIGKILLed at the crash point
    assert "survived" not in done.stdout


@pytest.mark.parametrize("at", ["trigger-after-claim", "trigger-after-run"])
def test_an_alias_watcher_killed_mid_move_loses_and_doubles_nothing(
    db_url: str, tmp_path: Path, registry: tuple[str, Any], at: str
) -> None:
    uri, mlflow = registry
    survivor = make(db_url, tmp_path / "a", uri)
    survivor.watcher.create(trigger(TriggerKind.ALIAS, "deploy", model="fraud", alias="champion"))
    mlflow.set_registered_model_alias("fraud", "champion", "3")
    crash(db_url, tmp_path / "b", uri, at)
    assert len(survivor.runs()) == (1 if at == "trigger-after-run" else 0)
    created = survivor.watcher.run_once()  # runs the claimed move, or finds its run
    assert len(created) == (0 if at == "trigger-after-run" else 1)
    (run,) = survivor.runs()
    assert run.params["model_version"] == "3"
    assert len(events(survivor, run.id)) == 1
    assert survivor.watcher.run_once() == []
    assert len(survivor.runs()) == 1


@pytest.mark.parametrize("kind", [TriggerKind.OBJECTS, TriggerKind.RUN_SUCCEEDED])
def test_a_watcher_killed_after_creating_a_run_loses_and_doubles_nothing(
    db_url: str, tmp_path: Path, kind: TriggerKind
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    survivor = make(db_url, tmp_path / "a")
    if kind is TriggerKind.OBJECTS:
        survivor.watcher.create(trigger(kind, "ingest", prefix=str(landing)))
        (landing / "new.csv").write_text("x")
    else:
        survivor.watcher.create(trigger(kind, "score", pipeline="train"))
        plan = survivor.watcher.pipelines.get("train").compile({})
        run = survivor.engine.submit(plan, project="fraud")
        survivor.engine.metadata.save_run(
            replace(run, state=RunState.SUCCEEDED, finished_at=T0 + 1)
        )
    before = len(survivor.runs())
    crash(db_url, tmp_path / "b", None, "trigger-after-run")
    assert len(survivor.runs()) == before + 1  # the run exists, its cause is unrecorded
    (name,) = [t.name for t in survivor.store.list_triggers()]
    assert survivor.store.firings("fraud", name) == []
    assert survivor.watcher.run_once() == []  # the survivor finds the run and records it
    (firing,) = survivor.store.firings("fraud", name)
    assert firing.outcome == "exists"
    assert len(events(survivor, str(firing.run_id))) == 1
    assert len(survivor.runs()) == before + 1


@pytest.mark.postgres
def test_two_watchers_racing_on_postgres_fire_each_cause_once(
    postgres_server: Any, tmp_path: Path, registry: tuple[str, Any]
) -> None:
    uri, mlflow = registry
    postgres_url = postgres_server.create_database()
    landing = tmp_path / "landing"
    landing.mkdir()
    one = make(postgres_url, tmp_path / "a", uri)
    two = make(postgres_url, tmp_path / "b", uri)
    one.watcher.create(trigger(TriggerKind.ALIAS, "deploy", model="fraud", alias="champion"))
    one.watcher.create(trigger(TriggerKind.OBJECTS, "ingest", prefix=str(landing)))
    one.watcher.create(trigger(TriggerKind.RUN_SUCCEEDED, "score", pipeline="train"))
    plan = one.watcher.pipelines.get("train").compile({})
    barrier = threading.Barrier(2)
    rounds = 4

    def change(i: int) -> None:
        mlflow.set_registered_model_alias("fraud", "champion", str(2 + i % 2))
        (landing / f"part-{i}.csv").write_text(str(i))
        run = one.engine.submit(plan, project="fraud")
        one.engine.metadata.save_run(replace(run, state=RunState.SUCCEEDED, finished_at=T0 + 1 + i))

    errors: list[BaseException] = []

    def drive(replica: Replica, first: bool) -> None:
        try:
            for i in range(rounds):
                barrier.wait(60)
                if first:
                    change(i)
                barrier.wait(60)
                replica.watcher.run_once()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=drive, args=(r, r is one)) for r in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    runs = one.runs()
    by: Callable[[str], list[str]] = lambda p: sorted(  # noqa: E731
        r.labels["trigger-cause"] for r in runs if r.pipeline == p
    )
    assert by("deploy") == ["fraud@champion=2", "fraud@champion=2",
                            "fraud@champion=3", "fraud@champion=3"]  # fmt: skip
    assert len(by("ingest")) == rounds
    assert len(set(by("ingest"))) == rounds
    assert len(by("score")) == rounds
    assert len(set(by("score"))) == rounds
