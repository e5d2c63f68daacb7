"""Checkpoints that outlive attempts: ``usina.checkpoint.save`` / ``load_latest``.

Inside a step::

    from usina import checkpoint

    start = 0
    if (found := checkpoint.load_latest()) is not None:
        state, start = found
        model.load_state_dict(state["model"])
    for step in range(start, total):
        ...
        if step % 50 == 0:
            checkpoint.save({"model": model.state_dict(), "opt": opt.state_dict()}, step)

Checkpoints of a step live in the artifact store under its run and step (not its attempt), so
an attempt after ``preempted``, ``node_lost``, ``oom`` or a gang failure finds the newest one;
``usina runs resume RUN`` does too. A checkpoint is published atomically: its bytes first, then
the manifest that names it, so a half-written checkpoint is never loaded. The newest ``keep``
are kept. In a distributed step, call ``save`` on every rank; rank 0 writes (``all_ranks=True``
writes one checkpoint per rank, for sharded state), and every rank can ``load_latest``.

This module is the definition layer's face of the feature; the runtime provides the
``Checkpointer`` that does the I/O (and uses ``torch.save`` when the state holds tensors).
"""

from __future__ import annotations

from typing import Any, Protocol

from usina.sdk.context import current


class Checkpointer(Protocol):
    """Where a running step's checkpoints go; set by the runtime on ``StepContext``."""

    def save(self, state: Any, step: int, *, keep: int, all_ranks: bool) -> bool: ...
    def load_latest(self, *, all_ranks: bool) -> tuple[Any, int] | None: ...
    def latest_step(self) -> int | None: ...


def _checkpointer() -> Checkpointer:
    found = current().checkpointer
    if found is None:
        from usina.errors import StateError
        from usina.i18n import N_, error

        raise error(
            StateError, N_("this step runs without a checkpoint store (no runtime set one up)")
        )
    return found  # type: ignore[no-any-return]


def save(state: Any, step: int, *, keep: int = 3, all_ranks: bool = False) -> bool:
    """Publish ``state`` as the checkpoint at training step ``step``; keep the newest ``keep``.

    Returns True where this process wrote it (rank 0, or every rank with ``all_ranks``).
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint step={step!r} must be a whole number >= 0")
    if keep < 1:
        raise ValueError(f"checkpoint keep={keep!r} must be >= 1")
    return _checkpointer().save(state, step, keep=keep, all_ranks=all_ranks)


def load_latest(*, all_ranks: bool = False) -> tuple[Any, int] | None:
    """``(state, step)`` of the newest complete checkpoint of this step in this run, or None."""
    return _checkpointer().load_latest(all_ranks=all_ranks)


def latest_step() -> int | None:
    """The step number of the newest complete checkpoint, without loading it."""
    return _checkpointer().latest_step()
