"""Schedules on a fake clock: cron in a time zone (DST both ways), catch-up after an outage,
each concurrency policy, starting deadlines, deterministic run ids, backfill intervals."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from usina.errors import DefinitionError
from usina.scheduling import (
    CatchUp,
    Concurrency,
    CronSchedule,
    Schedule,
    backfill_ticks,
    plan,
    scheduled_run_id,
    validate_cron,
)

HOUR = 3600.0


def ts(text: str, zone: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def local(when: float, zone: str) -> str:
    return datetime.fromtimestamp(when, UTC).astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M")


@pytest.mark.parametrize(
    ("expression", "zone", "message"),
    [
        ("61 * * * *", "UTC", "not a cron expression"),
        ("0 3 * *", "UTC", "expected 5 fields"),
        ("CRON_TZ=UTC 0 3 * * *", "UTC", "not in the expression"),
        ("0 3 * * *", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_invalid_schedules_are_refused_with_the_fix(
    expression: str, zone: str, message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):
        validate_cron(expression, zone)


def test_cron_in_sao_paulo_fires_at_the_local_hour() -> None:
    cron = CronSchedule("0 3 * * *", "America/Sao_Paulo")  # UTC-3, no DST since 2019
    ticks = cron.ticks(ts("2026-12-01T00:00:00"), ts("2026-12-03T23:00:00"))
    assert [datetime.fromtimestamp(t, UTC).isoformat() for t in ticks] == [
        "2026-12-01T06:00:00+00:00",
        "2026-12-02T06:00:00+00:00",
        "2026-12-03T06:00:00+00:00",
    ]


def test_spring_forward_fires_a_missing_time_once_at_the_next_valid_instant() -> None:
    zone = "Europe/Berlin"  # 2026-03-29 02:00 -> 03:00
    ticks = CronSchedule("30 2 * * *", zone).ticks(
        ts("2026-03-28T00:00", zone), ts("2026-03-30T12:00", zone)
    )
    assert [local(t, zone) for t in ticks] == ["03-28 02:30", "03-29 03:00", "03-30 02:30"]


def test_fall_back_fires_a_repeated_time_once() -> None:
    zone = "Europe/Berlin"  # 2026-10-25 03:00 -> 02:00
    daily = CronSchedule("30 2 * * *", zone).ticks(
        ts("2026-10-24T00:00", zone), ts("2026-10-26T12:00", zone)
    )
    assert [local(t, zone) for t in daily] == ["10-24 02:30", "10-25 02:30", "10-26 02:30"]
    start = ts("2026-10-25T00:30", zone)
    hourly = CronSchedule("0 * * * *", zone).ticks(start, start + 5 * HOUR)
    assert [local(t, zone) for t in hourly] == [
        "10-25 01:00",
        "10-25 02:00",
        "10-25 03:00",
        "10-25 04:00",
    ]


def hourly(**changes: object) -> Schedule:
    base = Schedule(
        name="nightly", project="fraud", pipeline="fraud", cron="0 * * * *",
        created_at=ts("2026-12-01T00:00:00"), last_tick=ts("2026-12-01T09:00:00"),
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_tick_on_time_starts_one_run_and_moves_the_watermark() -> None:
    now = ts("2026-12-01T10:00:05")
    result = plan(hourly(), now)
    assert [t.nominal for t in result.start] == [ts("2026-12-01T10:00:00")]
    assert result.skip == ()
    assert result.last_tick == ts("2026-12-01T10:00:00")
    assert result.next_tick == ts("2026-12-01T11:00:00")
    # planned again (another replica, or after a restart): nothing new
    assert plan(hourly(last_tick=result.last_tick), now).start == ()


@pytest.mark.parametrize(
    ("catchup", "started", "skipped"),
    [
        (CatchUp.LATEST, ["13:00"], ["11:00", "12:00"]),
        (CatchUp.ALL, ["11:00", "12:00", "13:00"], []),
        (CatchUp.SKIP, [], ["11:00", "12:00", "13:00"]),
    ],
)
def test_catch_up_after_a_three_hour_outage(
    catchup: CatchUp, started: list[str], skipped: list[str]
) -> None:
    sched = hourly(
        last_tick=ts("2026-12-01T10:00:00"), catchup=catchup, concurrency=Concurrency.ALLOW
    )
    now = ts("2026-12-01T13:20:00")  # down from 10:10 to 13:20
    result = plan(sched, now)
    hhmm = lambda ticks: [local(t.nominal, "UTC")[-5:] for t in ticks]  # noqa: E731
    assert hhmm(result.start) == started
    assert hhmm([t for t, _ in result.skip]) == skipped
    assert all(reason for _, reason in result.skip)
    assert result.last_tick == ts("2026-12-01T13:00:00")


def test_catch_up_all_is_bounded() -> None:
    sched = hourly(catchup=CatchUp.ALL, max_catchup=2, concurrency=Concurrency.ALLOW)
    result = plan(sched, ts("2026-12-01T15:00:01"))
    assert len(result.start) == 2
    assert len(result.skip) == 4


def test_starting_deadline_skips_late_ticks() -> None:
    sched = hourly(starting_deadline=600.0, catchup=CatchUp.ALL, concurrency=Concurrency.ALLOW)
    result = plan(sched, ts("2026-12-01T11:05:00"))
    assert [t.nominal for t in result.start] == [ts("2026-12-01T11:00:00")]
    ((late, reason),) = result.skip
    assert late.nominal == ts("2026-12-01T10:00:00")
    assert "starting deadline" in reason


def test_forbid_skips_while_a_run_is_in_flight() -> None:
    result = plan(hourly(concurrency=Concurrency.FORBID), ts("2026-12-01T10:00:01"), ["fraud-x"])
    assert result.start == ()
    assert "fraud-x is still running" in result.skip[0][1]
    assert result.last_tick == ts("2026-12-01T10:00:00")


def test_allow_starts_beside_a_run_in_flight() -> None:
    result = plan(hourly(concurrency=Concurrency.ALLOW), ts("2026-12-01T10:00:01"), ["fraud-x"])
    assert len(result.start) == 1
    assert result.cancel == ()


def test_replace_cancels_the_run_in_flight() -> None:
    result = plan(hourly(concurrency=Concurrency.REPLACE), ts("2026-12-01T10:00:01"), ["fraud-x"])
    assert len(result.start) == 1
    assert result.cancel == ("fraud-x",)


def test_paused_schedules_plan_nothing() -> None:
    result = plan(hourly(paused=True), ts("2026-12-01T12:00:01"))
    assert result.start == ()
    assert result.skip == ()
    assert result.last_tick == ts("2026-12-01T09:00:00")


def test_run_ids_depend_on_the_tick_alone() -> None:
    one = scheduled_run_id("fraud", "nightly", "fraud", ts("2026-12-01T10:00:00"))
    assert one == scheduled_run_id("fraud", "nightly", "fraud", ts("2026-12-01T10:00:00"))
    assert one.startswith("fraud-20261201-100000-s")
    assert one != scheduled_run_id("fraud", "nightly", "fraud", ts("2026-12-01T11:00:00"))
    assert one != scheduled_run_id("fraud", "weekly", "fraud", ts("2026-12-01T10:00:00"))
    assert one != scheduled_run_id("risk", "nightly", "fraud", ts("2026-12-01T10:00:00"))
    live = plan(hourly(), ts("2026-12-01T10:00:01")).start[0]
    assert live.run_id == scheduled_run_id("fraud", "nightly", "fraud", live.nominal)


def test_backfill_passes_each_interval_and_reuses_live_run_ids() -> None:
    sched = hourly(cron="0 0 * * *", params={"rows": 1000})
    ticks = backfill_ticks(sched, ts("2026-11-01T00:00:00"), ts("2026-11-03T00:00:00"))
    assert [local(t.nominal, "UTC") for t in ticks] == ["11-01 00:00", "11-02 00:00", "11-03 00:00"]
    assert ticks[0].interval_start == ts("2026-10-31T00:00:00")
    assert ticks[1].interval_start == ticks[0].nominal
    params = ticks[1].params(sched, accepted=["interval_start", "interval_end"])
    assert params == {
        "rows": 1000,
        "interval_start": "2026-11-01T00:00:00Z",
        "interval_end": "2026-11-02T00:00:00Z",
    }
    assert "scheduled_time" not in params
    live = plan(replace(sched, last_tick=ts("2026-11-02T23:00:00")), ts("2026-11-03T00:00:01"))
    assert live.start[0].run_id == ticks[-1].run_id
