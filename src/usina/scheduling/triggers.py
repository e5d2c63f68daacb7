"""Triggers: what makes a pipeline run besides a clock — a model alias that moved, another
pipeline that succeeded, new objects under a prefix. This module is pure: from a trigger and what
its watcher observed (the alias's version, the upstream runs, the objects listed) it says which
causes fire; the server's watcher (``usina.server.triggers``) observes and creates the runs.

Exactly once per cause, across replicas and restarts, comes from the run id: it is derived from
(project, trigger name, trigger creation time, cause key) alone (``triggered_run_id``), and the
metadata store refuses a second run with an existing id. A replica that loses the race, or a
restarted one that sees the same cause again, finds "exists already" and moves on. What the
store remembers (the causes already handled, the alias's last version) only spares work.

The kinds and their causes:

- ``alias``: ``spec = {"model": ..., "alias": ...}``; fires when the alias points at a version
  other than the one it pointed at when last handled (at creation: its version then, so the state
  at creation never fires). The cause is ``model@alias=version``; its key also counts the moves
  (``#n``), so a rollback to a version that fired before fires again.
- ``run-succeeded``: ``spec = {"pipeline": ...}``, a pipeline of the same project; each of its
  runs that succeeded after the trigger was created is a cause (its run id).
- ``objects``: ``spec = {"prefix": ...}``, an fsspec URL or a local folder; each object under it
  and its version (S3 version id or ETag, else modification time and size) is a cause; the
  objects present at creation are the baseline and never fire.

The triggered run gets the cause as parameters when its pipeline declares them
(``CAUSE_PARAMS``): ``model_name``, ``model_alias``, ``model_version``; ``upstream_run``;
``object_path``, ``object_version``.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.errors import DefinitionError
from usina.i18n import N_, error

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence


class TriggerKind(enum.StrEnum):
    ALIAS = "alias"
    RUN_SUCCEEDED = "run-succeeded"
    OBJECTS = "objects"


#: The parameters each kind passes to its runs, when the pipeline declares them.
CAUSE_PARAMS: dict[TriggerKind, tuple[str, ...]] = {
    TriggerKind.ALIAS: ("model_name", "model_alias", "model_version"),
    TriggerKind.RUN_SUCCEEDED: ("upstream_run",),
    TriggerKind.OBJECTS: ("object_path", "object_version"),
}

#: What each kind's ``spec`` holds.
SPEC_FIELDS: dict[TriggerKind, tuple[str, ...]] = {
    TriggerKind.ALIAS: ("model", "alias"),
    TriggerKind.RUN_SUCCEEDED: ("pipeline",),
    TriggerKind.OBJECTS: ("prefix",),
}

_ALIAS = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")

#: What a trigger watches, as the API says it (``Trigger.describe``, in English); the CLI shows
#: it in its reader's language (``usina.i18n.reword``).
WATCHING = {
    TriggerKind.ALIAS: N_("alias {model}@{alias} moves"),
    TriggerKind.RUN_SUCCEEDED: N_("a run of {pipeline} succeeds"),
    TriggerKind.OBJECTS: N_("new objects under {prefix}"),
}
#: What a cause of a trigger became (a firing's ``outcome``): its run was started, it existed
#: already (another replica, or an earlier pass, made it), or it was there at creation.
STARTED, EXISTS, BASELINE = N_("started"), N_("exists"), N_("baseline")


@dataclass(frozen=True, slots=True)
class Trigger:
    """A pipeline run on an event.

    name: unique within the project; part of every run id this trigger creates.
    kind / spec: what to watch (see the module docstring).
    params: pipeline parameters of every run; the cause's (``CAUSE_PARAMS``) are added.
    created_at: when it was created; part of the run ids, so a trigger deleted and made again
        under the same name starts afresh.
    state: the watcher's memory (the alias's last version and its moves); None-safe.
    revision: bumped by every change of ``state`` (a compare-and-set between replicas).
    """

    name: str
    project: str
    pipeline: str
    kind: TriggerKind
    spec: Mapping[str, str]
    params: Mapping[str, Any] = field(default_factory=dict)
    paused: bool = False
    created_at: float = 0.0
    state: Mapping[str, Any] = field(default_factory=dict)
    revision: int = 0

    def describe(self) -> str:
        """What it watches, in English (``WATCHING``)."""
        return WATCHING[self.kind].format(**self.spec)


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a trigger fires. key: its identity (in the run id; one run per key); shown: what the
    run's label and event say; values: the parameters it offers the run."""

    key: str
    shown: str
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpstreamRun:
    id: str
    finished_at: float


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    path: str
    version: str

    @property
    def key(self) -> str:
        return f"{self.path}@{self.version}"


def validate(kind: TriggerKind, spec: Mapping[str, str], pipeline: str) -> None:
    """Refuse a spec that lacks a field or names the trigger's own pipeline as upstream."""
    missing = [f for f in SPEC_FIELDS[kind] if not str(spec.get(f) or "").strip()]
    if missing:
        raise error(
            DefinitionError,
            N_("a trigger of kind {kind!r} needs {missing} (fields: {fields})"),
            kind=kind.value,
            missing=", ".join(missing),
            fields=", ".join(SPEC_FIELDS[kind]),
        )
    extra = sorted(set(spec) - set(SPEC_FIELDS[kind]))
    if extra:
        raise error(
            DefinitionError,
            N_("a trigger of kind {kind!r} takes only {fields}; not {extra}"),
            kind=kind.value,
            fields=", ".join(SPEC_FIELDS[kind]),
            extra=", ".join(extra),
        )
    if kind is TriggerKind.ALIAS and not _ALIAS.match(spec["alias"]):
        raise error(
            DefinitionError,
            N_("{alias!r} is not a model alias (letters, digits, _.-)"),
            alias=spec["alias"],
        )
    if kind is TriggerKind.RUN_SUCCEEDED and spec["pipeline"] == pipeline:
        raise error(
            DefinitionError,
            N_(
                "a trigger on the success of {pipeline!r} that runs {pipeline!r} would loop; "
                "pick another pipeline"
            ),
            pipeline=pipeline,
        )


def triggered_run_id(trigger: Trigger, cause_key: str) -> str:
    """``<pipeline>-t<16 hex>``: the same for the same cause of the same trigger, whoever asks."""
    stem = "".join(c if c.isalnum() else "-" for c in trigger.pipeline.lower()).strip("-")[:30]
    key = "\x00".join(
        (trigger.project, trigger.name, f"{trigger.created_at:.3f}", cause_key)
    ).encode()
    return f"{stem or 'run'}-t{hashlib.sha256(key).hexdigest()[:16]}"


def run_params(trigger: Trigger, cause: Cause, accepted: Collection[str] = ()) -> dict[str, Any]:
    """The run's parameters: the trigger's, plus the cause's that the pipeline declares."""
    out = dict(trigger.params)
    out.update({k: v for k, v in cause.values.items() if k in accepted})
    return out


# -- what fires ----------------------------------------------------------------------------


def alias_state(
    version: str | None, moves: int = 0, pending: Cause | None = None
) -> dict[str, Any]:
    """An alias trigger's state: the version last handled, how many moves it handled, and the
    move claimed but maybe not run yet (``pending``)."""
    claimed = None
    if pending is not None:
        claimed = {"key": pending.key, "shown": pending.shown, "values": dict(pending.values)}
    return {"version": version, "moves": moves, "pending": claimed}


def pending_cause(trigger: Trigger) -> Cause | None:
    """The move a replica claimed (``alias_cause``'s state) whose run may not exist yet."""
    claimed = trigger.state.get("pending")
    if not claimed:
        return None
    return Cause(str(claimed["key"]), str(claimed["shown"]), dict(claimed.get("values") or {}))


def alias_cause(trigger: Trigger, version: str | None) -> tuple[Cause | None, dict[str, Any]]:
    """The alias now points at ``version`` (None: nowhere): the cause, if it moved, and the state
    that claims it. The move's number is in the cause's key, so the replica whose compare-and-set
    of that state wins is the one that numbered it: a stale replica cannot number a move twice.
    """
    last = trigger.state.get("version")
    moves = int(trigger.state.get("moves") or 0)
    if version is None or version == last:
        return None, alias_state(last, moves)
    model, alias = trigger.spec["model"], trigger.spec["alias"]
    shown = f"{model}@{alias}={version}"
    values = {"model_name": model, "model_alias": alias, "model_version": version}
    cause = Cause(f"{shown}#{moves + 1}", shown, values)
    return cause, alias_state(version, moves + 1, pending=cause)


def handled(trigger: Trigger) -> dict[str, Any]:
    """An alias trigger's state once its pending move has its run."""
    return alias_state(trigger.state.get("version"), int(trigger.state.get("moves") or 0))


def succeeded_causes(
    trigger: Trigger, runs: Sequence[UpstreamRun], seen: Collection[str] = ()
) -> list[Cause]:
    """The upstream runs that succeeded after the trigger was created and were not handled,
    oldest first."""
    fresh = [r for r in runs if r.finished_at > trigger.created_at and r.id not in seen]
    fresh.sort(key=lambda r: (r.finished_at, r.id))
    return [Cause(r.id, r.id, {"upstream_run": r.id}) for r in fresh]


def object_causes(listing: Sequence[ObjectVersion], seen: Collection[str] = ()) -> list[Cause]:
    """The object versions listed that were not handled (nor present at creation), by path."""
    fresh = sorted((o for o in listing if o.key not in seen), key=lambda o: (o.path, o.version))
    return [
        Cause(o.key, o.key, {"object_path": o.path, "object_version": o.version}) for o in fresh
    ]
