"""Step output made safe to show (issue #14, finding 10): colour stays, every other terminal
control sequence goes, and a log cut to its tail says how much was left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from usina.backends import local
from usina.logtext import terminal_safe

RED = "\x1b[31m"
RESET = "\x1b[0m"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text\n\twith a tab\r\n", "plain text\n\twith a tab\r\n"),
        (f"{RED}error{RESET} and \x1b[1;38;5;208mbold orange\x1b[m", None),
        ("\x1b[2J\x1b[Hcleared", "cleared"),
        ("\x1b]0;owned window title\x07after", "after"),
        ("\x1b]2;title\x1b\\after", "after"),
        ("\x1b[10Aup\x1b[?1049hmode", "upmode"),
        ("bell\x07 backspace\x08 nul\x00", "bell backspace nul"),
        ("\x9b2J8-bit csi", "8-bit csi"),
        ("\x1bPdevice control\x1b\\x", "x"),
        ("\x1bcreset", "reset"),
        ("\x1b[31;2Jtricky", "tricky"),
        ("ünïcödé ✓", "ünïcödé ✓"),
    ],
)
def test_terminal_safe(raw: str, shown: str | None) -> None:
    assert terminal_safe(raw) == (raw if shown is None else shown)


def test_a_long_log_is_marked_where_it_was_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "_LOG_COPY_LIMIT", 1000)
    folder = tmp_path / "a-1"
    folder.mkdir()
    lines = [f"line {i:05d}\n" for i in range(1000)]  # 11 bytes each
    (folder / "output.log").write_text("".join(lines))
    text = local.read_log(str(tmp_path), "a-1")
    first, rest = text.split("\n", 1)
    assert first.startswith("… ")
    omitted = int(first.split()[1])
    assert rest.startswith("line ")  # whole lines after the mark
    assert omitted + len(rest.encode()) == 11 * 1000
    assert rest.endswith("line 00999\n")
    (folder / "output.log").write_text("short\n")
    assert local.read_log(str(tmp_path), "a-1") == "short\n"
