"""Lengths of time written by people (``30d``, ``12h``, ``90m``, ``45s``, ``2w``), as seconds:
token lifetimes on the command line and in the API."""

from __future__ import annotations

import re

from usina.i18n import N_, error

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)
NEVER = frozenset({"never", "none", "0"})


def parse_duration(text: str) -> float | None:
    """Seconds in ``text`` (a number and a unit: s, m, h, d, w); None for ``never``.

    Raises ValueError naming the accepted forms when ``text`` is neither."""
    if text.strip().lower() in NEVER:
        return None
    match = _PATTERN.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise error(
            ValueError,
            N_(
                "{text!r} is not a duration: write a positive number and a unit, e.g. 30d, "
                "12h, 90m, 2w (s, m, h, d, w), or 'never'"
            ),
            text=text,
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]
