"""Cron expressions in an IANA time zone, evaluated to nominal fire times in UTC.

Five-field cron (minute hour day-of-month month day-of-week, with ``@daily``-style aliases), read
by ``croniter`` and evaluated in the schedule's zone with ``zoneinfo``. Daylight-saving rules,
the same every year and tested for both 2026 transitions:

- a wall-clock time that does not exist (spring forward) fires once, at the next valid instant
  (02:30 on a 02:00 → 03:00 night fires at 03:00);
- a wall-clock time that happens twice (fall back) fires once, at its first occurrence; so an
  hourly schedule has one two-hour gap that night, and a daily one never runs twice.

Times are POSIX seconds (UTC) everywhere else in usina; only this module deals in zones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from usina.errors import DefinitionError

_MAX_TICKS = 100_000  # a bound on one call's ticks: `* * * * *` over 69 days


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DefinitionError(
            f"unknown time zone {timezone!r}; use an IANA name such as 'America/Sao_Paulo' or 'UTC'"
        ) from exc


def validate_cron(expression: str, timezone: str = "UTC") -> None:
    """Raise ``DefinitionError`` naming the problem when the expression or zone is invalid."""
    from croniter import croniter

    text = expression.strip()
    if text.upper().startswith(("CRON_TZ=", "TZ=")):
        raise DefinitionError(
            f"{expression!r}: give the time zone as the schedule's timezone, not in the expression"
        )
    if len(text.split()) not in (1, 5) or not croniter.is_valid(text):
        raise DefinitionError(
            f"{expression!r} is not a cron expression; expected 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 3 * * *' for 03:00 daily"
        )
    _zone(timezone)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """``expression`` evaluated in ``timezone``."""

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        validate_cron(self.expression, self.timezone)

    def ticks(self, after: float, until: float, limit: int = _MAX_TICKS) -> list[float]:
        """Fire times ``t`` with ``after < t <= until``, oldest first (at most ``limit``)."""
        from croniter import croniter

        zone = _zone(self.timezone)
        start = datetime.fromtimestamp(after, UTC).astimezone(zone)
        it = croniter(self.expression.strip(), start)
        out: list[float] = []
        last_wall: datetime | None = None
        while len(out) < limit:
            fire: datetime = it.get_next(datetime)
            when = fire.timestamp()
            if when > until:
                break
            wall = fire.replace(tzinfo=None)
            if wall == last_wall:  # the second occurrence of a repeated wall-clock time
                continue
            last_wall = wall
            if when > after:
                out.append(when)
        return out

    def next_after(self, after: float) -> float:
        """The first fire time after ``after``."""
        ticks = self.ticks(after, after + 366 * 86_400 * 5, limit=1)
        if not ticks:
            raise DefinitionError(f"{self.expression!r} never fires (checked five years ahead)")
        return ticks[0]

    def previous(self, before: float) -> float:
        """The last fire time strictly before ``before``."""
        from croniter import croniter

        start = datetime.fromtimestamp(before, UTC).astimezone(_zone(self.timezone))
        fire: datetime = croniter(self.expression.strip(), start).get_prev(datetime)
        return fire.timestamp()
