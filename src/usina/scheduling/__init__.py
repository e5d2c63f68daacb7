"""Schedules and triggers: when a pipeline runs on its own. ``cron`` turns an expression into
nominal times; ``planner`` decides, from a schedule, the clock and the runs in flight, which runs
to create, skip or cancel; ``triggers`` decides which causes (an alias moved, an upstream run
succeeded, new objects) fire. All are pure: the server's scheduler and trigger watcher store
them and create the runs (see ``usina.server``).
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
