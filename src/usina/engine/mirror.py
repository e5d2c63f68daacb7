"""The engine's in-memory mirror of the runs it drives: their steps and attempts.

The store stays the truth. Every change is written there first, then to the mirror; the mirror
is reread every ``refresh_interval`` seconds and whenever this engine cannot be sure it wrote
everything since it last read (it did not hold the run's lease without a gap, or the run record
changed: a resume or cancel from elsewhere). It saves re-reading and decoding every step and
attempt on every pass of a large run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usina.engine.ports import MetadataStore
    from usina.engine.records import AttemptRecord, AttemptState, Event, RunRecord, StepRecord


@dataclass
class Mirror:
    """The steps and attempts of one run, as this engine last read or wrote them."""

    steps: dict[str, StepRecord]
    attempts: dict[str, list[AttemptRecord]]  # node -> attempts, by number
    loaded_at: float  # time.monotonic() of the last full read
    lease_until: float | None = None  # our lease's expiry as seen on the last pass
    run_seen: RunRecord | None = None  # the run as this engine last read or wrote it


def attempts_by_node(metadata: MetadataStore, run_id: str) -> dict[str, list[AttemptRecord]]:
    """A run's attempts from the store, grouped by node and ordered by number."""
    grouped: dict[str, list[AttemptRecord]] = {}
    for attempt in sorted(metadata.get_attempts(run_id), key=lambda a: a.number):
        grouped.setdefault(attempt.node, []).append(attempt)
    return grouped


class Mirrors:
    """The mirrors of every run an engine drives, and the writes that keep them current."""

    def __init__(self, metadata: MetadataStore, refresh_interval: float) -> None:
        self.metadata = metadata
        self.refresh_interval = refresh_interval
        self._mirrors: dict[str, Mirror] = {}

    def get(self, run_id: str) -> Mirror | None:
        return self._mirrors.get(run_id)

    def forget(self, run_id: str) -> None:
        self._mirrors.pop(run_id, None)

    def trusted(self, run: RunRecord, owner: str, now: float) -> Mirror:
        """The run's mirror, reread from the store unless this engine (``owner``) held the run's
        lease without a gap and the run record is as it left it: then nobody else can have
        written the run's steps or attempts since it was read."""
        kept = self._mirrors.get(run.id)
        ours = run.lease_owner == owner
        if kept is not None and not (
            ours
            and kept.lease_until is not None
            and kept.lease_until >= now
            and kept.run_seen is not None
            and _unleased(kept.run_seen) == _unleased(run)
        ):
            self._mirrors.pop(run.id, None)
        mirror = self.load(run.id)
        mirror.lease_until = run.lease_expires if ours else None
        return mirror

    def load(self, run_id: str) -> Mirror:
        """The run's mirror, read from the store when there is none or it is stale."""
        mirror = self._mirrors.get(run_id)
        if mirror is None or time.monotonic() - mirror.loaded_at > self.refresh_interval:
            mirror = Mirror(
                steps={s.node: s for s in self.metadata.get_steps(run_id)},
                attempts=attempts_by_node(self.metadata, run_id),
                loaded_at=time.monotonic(),
            )
            self._mirrors[run_id] = mirror
        return mirror

    def save_step(self, step: StepRecord, events: Sequence[Event] = ()) -> None:
        self.metadata.save_step(step, events)
        mirror = self._mirrors.get(step.run_id)
        if mirror is not None:
            mirror.steps[step.node] = step

    def record_attempt(
        self,
        attempt: AttemptRecord,
        *,
        expected: AttemptState | None,
        events: Sequence[Event],
        step: StepRecord | None = None,
    ) -> bool:
        """``MetadataStore.record_attempt``, then the mirror. When the store refuses (the
        stored attempt was not in state ``expected``: another engine changed it), the mirror
        was stale and is dropped, so the next pass rereads the run; returns False."""
        if not self.metadata.record_attempt(attempt, expected=expected, events=events, step=step):
            self.forget(attempt.run_id)
            return False
        mirror = self._mirrors.get(attempt.run_id)
        if mirror is not None:
            lst = [a for a in mirror.attempts.get(attempt.node, []) if a.id != attempt.id]
            lst.append(attempt)
            lst.sort(key=lambda a: a.number)
            mirror.attempts[attempt.node] = lst
            if step is not None:
                mirror.steps[step.node] = step
        return True


def _unleased(run: RunRecord) -> RunRecord:
    return replace(run, lease_owner=None, lease_expires=None)


__all__ = ["Mirror", "Mirrors", "attempts_by_node"]
