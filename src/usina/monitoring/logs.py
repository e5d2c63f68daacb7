"""JSON log lines carrying the ids that tie a line to a run, step, attempt or request.

``JsonFormatter`` writes one JSON object per record: ``ts`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, the ids that apply (``run_id``, ``step``, ``attempt_id``,
``request_id``, ``model``), ``exc`` for a traceback, and any other ``extra=`` field.

The ids come from the record (``log.info(..., extra={"run_id": ...})`` or a ``LoggerAdapter``)
or from ``log_context(run_id=...)``, a context manager that entry points wrap around the work
they do (the CLI around a run it drives, a server around a request). The library only tags its
records; which formatter prints them is the CLI's and the servers' choice
(``usina --log-format json`` or ``USINA_LOG_FORMAT=json``), never the library's.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

ID_FIELDS = ("run_id", "step", "attempt_id", "request_id", "model")

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "usina_log_context",
    default={},  # noqa: B039 - never mutated, only replaced
)

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


@contextlib.contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Tag every record logged inside the block (this thread or task) with ``ids``."""
    current = _context.get()
    token = _context.set({**current, **{k: str(v) for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_ids() -> dict[str, str]:
    """The ids ``log_context`` set for this thread or task."""
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_context.get())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


__all__ = ["ID_FIELDS", "JsonFormatter", "current_ids", "log_context"]
