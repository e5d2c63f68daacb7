"""Triggers' pure planning: run ids derived from the cause alone, alias moves numbered by the
claim that wins, upstream runs after creation only, object versions not seen before, spec
checks; and the object listing's versions on a local and an in-memory file system."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from usina.errors import DefinitionError
from usina.scheduling.triggers import (
    STARTED,
    Cause,
    ObjectVersion,
    Trigger,
    TriggerKind,
    UpstreamRun,
    alias_cause,
    alias_state,
    handled,
    object_causes,
    pending_cause,
    run_params,
    succeeded_causes,
    triggered_run_id,
    validate,
)
from usina.stores.objects import list_objects

ALIAS = Trigger(
    name="redeploy", project="fraud", pipeline="Deploy Model", kind=TriggerKind.ALIAS,
    spec={"model": "fraud", "alias": "champion"}, created_at=100.0, state=alias_state("1"),
)  # fmt: skip


def test_run_ids_derive_from_project_name_creation_and_cause() -> None:
    one = triggered_run_id(ALIAS, "fraud@champion=2#1")
    assert one == triggered_run_id(replace(ALIAS, state={}, revision=7), "fraud@champion=2#1")
    assert one.startswith("deploy-model-t")
    assert len(one) == len("deploy-model-t") + 16
    others = {
        triggered_run_id(ALIAS, "fraud@champion=2#2"),
        triggered_run_id(replace(ALIAS, name="other"), "fraud@champion=2#1"),
        triggered_run_id(replace(ALIAS, project="p2"), "fraud@champion=2#1"),
        triggered_run_id(replace(ALIAS, created_at=101.0), "fraud@champion=2#1"),
    }
    assert one not in others
    assert len(others) == 4


def test_an_alias_move_is_numbered_and_claimed() -> None:
    assert alias_cause(ALIAS, "1") == (None, alias_state("1", 0))
    assert alias_cause(ALIAS, None)[0] is None  # the alias was removed: nothing to run
    cause, claim = alias_cause(ALIAS, "2")
    assert cause == Cause(
        "fraud@champion=2#1",
        "fraud@champion=2",
        {"model_name": "fraud", "model_alias": "champion", "model_version": "2"},
    )
    claimed = replace(ALIAS, state=claim)
    assert pending_cause(claimed) == cause
    done = replace(ALIAS, state=handled(claimed))
    assert pending_cause(done) is None
    assert alias_cause(done, "2")[0] is None
    back, _ = alias_cause(done, "1")  # a rollback is a move of its own
    assert back is not None
    assert back.key == "fraud@champion=1#2"


def test_upstream_runs_count_after_creation_and_once() -> None:
    trigger = replace(ALIAS, kind=TriggerKind.RUN_SUCCEEDED, spec={"pipeline": "train"}, state={})
    runs = [UpstreamRun("late", 300.0), UpstreamRun("early", 99.0), UpstreamRun("mid", 200.0)]
    assert [c.key for c in succeeded_causes(trigger, runs)] == ["mid", "late"]
    assert [c.values for c in succeeded_causes(trigger, runs, seen={"mid"})] == [
        {"upstream_run": "late"}
    ]


def test_object_versions_fire_when_not_seen() -> None:
    listing = [ObjectVersion("s3://b/x/2.csv", "e2"), ObjectVersion("s3://b/x/1.csv", "e1")]
    causes = object_causes(listing, seen={"s3://b/x/1.csv@e1"})
    assert [c.key for c in causes] == ["s3://b/x/2.csv@e2"]
    assert causes[0].values == {"object_path": "s3://b/x/2.csv", "object_version": "e2"}
    assert object_causes(listing, seen={o.key for o in listing}) == []


def test_run_params_take_only_what_the_pipeline_declares() -> None:
    trigger = replace(ALIAS, params={"target": "prod"})
    cause, _ = alias_cause(trigger, "2")
    assert cause is not None
    assert run_params(trigger, cause, accepted=["target", "model_version"]) == {
        "target": "prod",
        "model_version": "2",
    }


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        (TriggerKind.ALIAS, {"model": "fraud"}, "needs alias"),
        (TriggerKind.ALIAS, {"model": "m", "alias": "a b"}, "not a model alias"),
        (TriggerKind.OBJECTS, {"prefix": "s3://b", "model": "m"}, "takes only prefix"),
        (TriggerKind.RUN_SUCCEEDED, {"pipeline": "deploy"}, "would loop"),
    ],
)
def test_specs_are_checked(kind: TriggerKind, spec: dict[str, str], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        validate(kind, spec, "deploy")


def test_object_listing_versions_change_with_the_content(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_text("1")
    (first,) = list_objects(str(tmp_path))
    assert first.path == str(tmp_path / "a" / "x.csv")
    (tmp_path / "a" / "x.csv").write_text("12")
    (second,) = list_objects(str(tmp_path))
    assert second.path == first.path
    assert second.version != first.version
    assert list_objects(str(tmp_path / "missing")) == []


def test_object_listing_on_an_fsspec_url() -> None:
    import fsspec

    bucket = f"memory://trig-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{bucket}/in/a.json", b"{}")
    fs.pipe(f"{bucket}/in/deep/b.json", b"[]")
    found = list_objects(f"{bucket}/in")
    assert [o.path.rsplit("/in/", 1)[1] for o in found] == ["a.json", "deep/b.json"]
    assert all(o.path.startswith("memory://") for o in found)


@pytest.mark.parametrize(
    ("kind", "spec", "said"),
    [
        (TriggerKind.ALIAS, {"model": "fraud", "alias": "champion"}, "o alias fraud@champion muda"),
        (TriggerKind.RUN_SUCCEEDED, {"pipeline": "etl"}, "uma execução de etl termina com sucesso"),
        (TriggerKind.OBJECTS, {"prefix": "s3://b/in/"}, "surgem novos objetos em s3://b/in/"),
    ],
)
def test_what_a_trigger_watches_and_its_firings_read_in_portuguese_in_the_cli(
    kind: TriggerKind, spec: dict[str, str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from usina import i18n
    from usina.cli.common import Output
    from usina.cli.triggers import _show

    trigger = Trigger("t", "default", "train", kind, spec)
    item = {
        "project": "default", "name": "t", "pipeline": "train", "paused": False,
        "watching": trigger.describe(), "created_at": "2026-01-01T00:00:00Z",
        "cause_params": ["model_version"],
        "firings": [{"at": "2026-01-01T00:01:00Z", "outcome": STARTED, "run_id": "r1",
                     "cause": "c"}],
    }  # fmt: skip
    try:
        i18n.set_language("pt-BR")
        _show(item, Output.text)
    finally:
        i18n.set_language("en")
    shown = " ".join(capsys.readouterr().out.split())
    assert f"default/t: executa train quando {said} (observando, desde" in shown
    assert "iniciada r1 c" in shown
    with pytest.raises(DefinitionError) as info:
        validate(kind, {}, "train")
    assert i18n.error_text(info.value, "pt-BR").startswith(f"um gatilho do tipo '{kind.value}'")
