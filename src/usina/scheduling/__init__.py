"""Schedules: when a pipeline runs on its own (cron in a time zone, catch-up, concurrency,
backfill). ``cron`` turns an expression into nominal times; ``planner`` decides, from a
schedule, the clock and the runs in flight, which runs to create, skip or cancel. Both are pure:
the server's scheduler loop stores schedules and creates the runs (see ``usina.server``).
"""

from usina.scheduling.cron import CronSchedule, validate_cron
from usina.scheduling.planner import (
    CatchUp,
    Concurrency,
    Plan,
    Schedule,
    Tick,
    backfill_ticks,
    plan,
    scheduled_run_id,
)

__all__ = [
    "CatchUp",
    "Concurrency",
    "CronSchedule",
    "Plan",
    "Schedule",
    "Tick",
    "backfill_ticks",
    "plan",
    "scheduled_run_id",
    "validate_cron",
]
