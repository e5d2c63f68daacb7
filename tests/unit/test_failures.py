"""The one failure vocabulary: error records, the exit classifier and the gang ranking."""

from __future__ import annotations

import signal

import pytest

from usina import FailureClass
from usina.engine.failures import (
    ErrorRecord,
    MemberEnd,
    exit_code_for,
    exit_failure,
    root_cause,
)

F = FailureClass


@pytest.mark.parametrize(
    ("stored", "kind"),
    [("user", F.USER_ERROR), ("user_error", F.USER_ERROR), ("oom", F.OOM), ("infra", F.INFRA),
     ("node_lost", F.NODE_LOST), ("something-new", F.USER_ERROR), (None, F.USER_ERROR)],
)  # fmt: skip
def test_error_records_of_every_age_read_as_a_failure_class(stored: object, kind: F) -> None:
    record = ErrorRecord.from_json({"kind": stored, "type": "X", "message": "X: y"})
    assert record.kind is kind


def test_an_error_record_round_trips_through_json() -> None:
    record = ErrorRecord(F.OOM, "MemoryError", "MemoryError: big", "tb", rank=3, at=12.5)
    assert record.to_json()["kind"] == "oom"
    assert ErrorRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    ("code", "sig", "near", "outside", "failure", "reason"),
    [
        (0, None, None, False, None, None),
        (42, None, None, False, F.USER_ERROR, "UserError"),
        (43, None, None, False, F.OOM, "MemoryError"),
        (44, None, None, False, F.INFRA, "RuntimeError"),
        (45, None, None, False, F.NODE_LOST, "RankLost"),
        (1, None, None, False, F.USER_ERROR, "Error"),
        (137, None, None, False, F.OOM, "Killed"),  # a container: nobody measured memory
        (None, signal.SIGKILL, True, False, F.OOM, "OOMKilled"),
        (None, signal.SIGKILL, False, False, F.USER_ERROR, "Signal"),
        (None, signal.SIGSEGV, None, False, F.USER_ERROR, "Signal"),
        (None, signal.SIGTERM, None, True, F.NODE_LOST, "RankLost"),
        (None, signal.SIGKILL, True, True, F.NODE_LOST, "RankLost"),
    ],
)
def test_one_classifier_reads_every_process_end(
    code: int | None,
    sig: int | None,
    near: bool | None,
    outside: bool,
    failure: F | None,
    reason: str | None,
) -> None:
    ended = exit_failure(code, signal=sig, memory_near_limit=near, outside_kill=outside)
    got = (ended.failure, ended.reason) if ended is not None else (None, None)
    assert got == (failure, reason)


@pytest.mark.parametrize("failure", [F.USER_ERROR, F.OOM, F.INFRA, F.NODE_LOST])
def test_the_runtime_exit_code_of_a_class_reads_back_as_that_class(failure: F) -> None:
    ended = exit_failure(exit_code_for(failure))
    assert ended is not None
    assert ended.failure is failure


def test_the_gang_root_cause_is_the_disruption_then_the_kill_then_the_first_failure() -> None:
    ends = {
        "stopped": MemberEnd(F.USER_ERROR, stopped_by_gang=True, order=(0,)),
        "crashed": MemberEnd(F.USER_ERROR, order=(1,)),
        "oom": MemberEnd(F.OOM, order=(2,)),
        "preempted": MemberEnd(F.PREEMPTED, platform=True, order=(3,)),
    }
    names = list(ends)
    assert root_cause(names, ends.__getitem__) == "preempted"
    names.remove("preempted")
    assert root_cause(names, ends.__getitem__) == "oom"
    names.remove("oom")
    assert root_cause(names, ends.__getitem__) == "crashed"
    names.remove("crashed")
    assert root_cause(names, ends.__getitem__) == "stopped"


def test_the_controller_naming_a_member_breaks_a_tie() -> None:
    ends = [MemberEnd(F.USER_ERROR, order=(0,), index=0), MemberEnd(F.USER_ERROR, named=True)]
    assert root_cause(ends, lambda e: e).named
