"""A step's output made safe to show: terminal control sequences removed except colour, and
the mark of output that was cut off.

A step prints whatever it likes; shown raw, its escape sequences could clear the reader's
screen, retitle their window or rewrite what they see. Colour (SGR, ``ESC [ ... m``) stays,
tabs and newlines stay; every other escape sequence and control character goes.
"""

from __future__ import annotations

import re

# ESC-introduced sequences: CSI (ESC [ params final), OSC (ESC ] ... BEL or ESC \), DCS/SOS/PM/
# APC strings (ESC P|X|^|_ ... ESC \), and two-character escapes (ESC + one byte). The 8-bit
# C1 introducers (U+009B CSI, U+009D OSC) are matched the same way.
_CSI = r"(?:\x1b\[|\x9b)([0-?]*)([ -/]*)([@-~])"
_STRING = r"(?:\x1b[\]PX^_]|[\x90\x9d\x98\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
# Then, alone: C0 controls but tab, newline and carriage return; DEL; the other C1 controls.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f]"
_ESCAPE = re.compile(rf"{_CSI}|{_STRING}|\x1b[ -/]*[0-~]?|{_CONTROL}", re.DOTALL)
_ANY_CONTROL = re.compile(_CONTROL)
_SGR_PARAMS = re.compile(r"[0-9;:]*")

TRUNCATION_MARK = "… {n} bytes not shown (the start of this output was cut off) …\n"


def _keep_colour(match: re.Match[str]) -> str:
    params, intermediates, final = match.group(1), match.group(2), match.group(3)
    if (
        final == "m"
        and not intermediates
        and params is not None
        and _SGR_PARAMS.fullmatch(params)
        and match.group(0).startswith("\x1b")
    ):
        return match.group(0)
    return ""


def terminal_safe(text: str) -> str:
    """``text`` without terminal control sequences, colour (SGR) excepted."""
    if not _ANY_CONTROL.search(text):
        return text
    return _ESCAPE.sub(_keep_colour, text)


def truncation_mark(omitted: int) -> str:
    """The line put where ``omitted`` bytes of output were left out."""
    return TRUNCATION_MARK.format(n=omitted)
