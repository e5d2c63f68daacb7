"""Triggers in SQL: what the platform server's trigger watcher reads and moves forward.

``TriggerStore`` works on the platform database (opened by ``usina.stores.database``, like the
other stores). Writes that race between replicas are safe by construction: ``advance`` is a
compare-and-set on the trigger's revision, and ``record`` keeps the first outcome of a cause.
Neither is what makes a cause fire once — the run id is (``usina.scheduling.triggers``) — they
spare the watcher from asking again.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from usina.errors import NotFoundError, StateError
from usina.i18n import N_, error
from usina.scheduling.triggers import BASELINE, Trigger, TriggerKind
from usina.stores.database import SqlStore
from usina.stores.sql_schema import trigger_firings, triggers

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping


@dataclass(frozen=True, slots=True)
class Firing:
    """One cause a trigger handled: ``started`` (this replica made the run), ``exists`` (the run
    was there already: another replica, or this one before a crash), or ``baseline``."""

    project: str
    name: str
    cause: str
    shown: str
    outcome: str
    run_id: str | None
    at: float


def _hash(cause: str) -> str:
    return hashlib.sha256(cause.encode()).hexdigest()


def _from_row(row: Any) -> Trigger:
    return Trigger(
        name=row["name"],
        project=row["project"],
        pipeline=row["pipeline"],
        kind=TriggerKind(row["kind"]),
        spec={str(k): str(v) for k, v in dict(row["spec"]).items()},
        params=dict(row["params"] or {}),
        paused=bool(row["paused"]),
        created_at=float(row["created_at"]),
        state=dict(row["state"] or {}),
        revision=int(row["revision"]),
    )


def _key(project: str, name: str) -> Any:
    return (triggers.c.project == project) & (triggers.c.name == name)


class TriggerStore(SqlStore):
    """Triggers and the causes they handled, in the platform database."""

    kind = "trigger store"

    def create(
        self,
        trigger: Trigger,
        *,
        baseline: Iterable[str] = (),
        now: float | None = None,
    ) -> Trigger:
        """Create the trigger with its state at creation; ``baseline`` causes (the objects under
        its prefix now) are recorded as handled. A trigger of that name must not exist."""
        now = time.time() if now is None else now
        made = replace(trigger, created_at=now, revision=1)
        try:
            with self._conn(f"creating trigger {trigger.name!r}") as conn:
                # what a watcher recorded for a deleted trigger of this name, mid-pass
                conn.execute(
                    sa.delete(trigger_firings).where(
                        (trigger_firings.c.project == made.project)
                        & (trigger_firings.c.name == made.name)
                        & sa.not_(
                            sa.exists().where(
                                (triggers.c.project == made.project)
                                & (triggers.c.name == made.name)
                            )
                        )
                    )
                )
                conn.execute(
                    sa.insert(triggers).values(
                        project=made.project, name=made.name, pipeline=made.pipeline,
                        kind=made.kind.value, spec=dict(made.spec), params=dict(made.params),
                        paused=made.paused, state=dict(made.state), revision=made.revision,
                        created_at=now, updated_at=now,
                    )
                )  # fmt: skip
                rows = [
                    {"project": made.project, "name": made.name, "cause_hash": _hash(c),
                     "cause": c, "shown": c, "outcome": BASELINE, "run_id": None, "at": now}
                    for c in dict.fromkeys(baseline)
                ]  # fmt: skip
                if rows:
                    conn.execute(sa.insert(trigger_firings), rows)
        except IntegrityError as exc:
            raise StateError(
                f"project {trigger.project!r} has a trigger {trigger.name!r} already; "
                f"`usina triggers delete {trigger.name}` first, or pick another name"
            ) from exc
        return made

    def get(self, project: str, name: str) -> Trigger:
        with self._conn(f"reading trigger {name!r}", write=False) as conn:
            row = conn.execute(sa.select(triggers).where(_key(project, name))).mappings().first()
        if row is None:
            raise error(
                NotFoundError,
                N_("project {project!r} has no trigger {name!r}; `usina triggers ls` lists them"),
                project=project,
                name=name,
            )
        return _from_row(row)

    def list_triggers(self, projects: Collection[str] | None = None) -> list[Trigger]:
        query = sa.select(triggers).order_by(triggers.c.project, triggers.c.name)
        if projects is not None:
            query = query.where(triggers.c.project.in_(list(projects)))
        with self._conn("listing triggers", write=False) as conn:
            return [_from_row(r) for r in conn.execute(query).mappings()]

    def delete(self, project: str, name: str) -> None:
        """Delete a trigger and what it remembers; its runs stay."""
        with self._conn(f"deleting trigger {name!r}") as conn:
            if conn.execute(sa.delete(triggers).where(_key(project, name))).rowcount == 0:
                raise error(
                    NotFoundError,
                    N_("project {project!r} has no trigger {name!r}"),
                    project=project,
                    name=name,
                )
            conn.execute(
                sa.delete(trigger_firings).where(
                    (trigger_firings.c.project == project) & (trigger_firings.c.name == name)
                )
            )

    def set_paused(
        self, project: str, name: str, paused: bool, *, now: float | None = None
    ) -> Trigger:
        """Pause, or resume. A resumed trigger handles what happened while it was paused (an
        alias that moved, runs that succeeded, objects that appeared), each once."""
        now = time.time() if now is None else now
        with self._conn(f"pausing trigger {name!r}") as conn:
            done = conn.execute(
                sa.update(triggers).where(_key(project, name)).values(paused=paused, updated_at=now)
            )
            if done.rowcount == 0:
                raise error(
                    NotFoundError,
                    N_("project {project!r} has no trigger {name!r}"),
                    project=project,
                    name=name,
                )
        return self.get(project, name)

    def advance(self, trigger: Trigger, state: Mapping[str, Any]) -> bool:
        """Replace the trigger's state if its revision is still ``trigger.revision``; False when
        another replica moved it first (or the trigger is gone)."""
        with self._conn(f"advancing trigger {trigger.name!r}") as conn:
            done = conn.execute(
                sa.update(triggers)
                .where(_key(trigger.project, trigger.name))
                .where(triggers.c.revision == trigger.revision)
                .values(state=dict(state), revision=trigger.revision + 1)
            )
            return bool(done.rowcount)

    def seen(self, project: str, name: str) -> set[str]:
        """The causes the trigger handled (and its baseline)."""
        query = sa.select(trigger_firings.c.cause).where(
            (trigger_firings.c.project == project) & (trigger_firings.c.name == name)
        )
        with self._conn("reading handled causes", write=False) as conn:
            return {str(r[0]) for r in conn.execute(query)}

    def record(self, firing: Firing) -> bool:
        """Keep what a cause became; False when it was recorded already."""
        try:
            with self._conn("recording a trigger's cause") as conn:
                conn.execute(
                    sa.insert(trigger_firings).values(
                        project=firing.project, name=firing.name, cause_hash=_hash(firing.cause),
                        cause=firing.cause, shown=firing.shown, outcome=firing.outcome,
                        run_id=firing.run_id, at=firing.at,
                    )
                )  # fmt: skip
        except IntegrityError:
            return False
        return True

    def firings(self, project: str, name: str, limit: int = 50) -> list[Firing]:
        """What the trigger's newest causes became (no baseline), newest first."""
        query = (
            sa.select(trigger_firings)
            .where(
                (trigger_firings.c.project == project)
                & (trigger_firings.c.name == name)
                & (trigger_firings.c.outcome != "baseline")
            )
            .order_by(trigger_firings.c.at.desc())
            .limit(limit)
        )
        with self._conn("listing a trigger's causes", write=False) as conn:
            return [
                Firing(r["project"], r["name"], r["cause"], r["shown"], r["outcome"],
                       r["run_id"], r["at"])
                for r in conn.execute(query).mappings()
            ]  # fmt: skip
