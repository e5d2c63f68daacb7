"""``--help`` in the reader's language: the commands' and options' help texts, from the catalogue.

Click prints ``--help`` while it parses, before any callback runs, so the language is chosen
from the arguments first (``lang_in``, ``usina --lang pt-BR run --help``) and the texts of the
built command tree are put in that language before it is invoked (``translated``). English
runs the tree as Typer builds it, untouched.

The message ids are the English texts as the code writes them: a command's help paragraph by
paragraph (the first is its line in its group's list), each option's and argument's ``help=``,
with their line breaks made spaces (a docstring rewrapped keeps its translation).
``scripts/i18n.py`` extracts them from the whole app (``help_texts``), so the catalogue's
completeness check covers them like any ``_()`` message; a text without a translation shows in
English.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from usina.i18n import DEFAULT, N_, normalize, reword, translate

if TYPE_CHECKING:
    from collections.abc import Iterator

    import typer

__all__ = ["NEEDS_EXTRA", "help_texts", "lang_in", "message_id", "translated"]

#: The help of a command whose extra is not installed (``usina.cli.optional``).
NEEDS_EXTRA = N_("(needs: pip install 'usina[{extra}]')")

_SPACES = re.compile(r"\s+")


def lang_in(argv: list[str], value_options: frozenset[str]) -> str | None:
    """The language ``--lang`` asks for among the root's options (the words before the
    command); None when it is not given. ``value_options``: the root's options that take a
    value (the word after one is not the command)."""
    words = iter(argv)
    for word in words:
        if word == "--lang":
            return next(words, None)
        if word.startswith("--lang="):
            return word.partition("=")[2]
        if word in value_options:
            next(words, None)
        elif not word.startswith("-"):
            return None
    return None


def message_id(text: str) -> str:
    """A help paragraph as a message id: its runs of whitespace one space."""
    return _SPACES.sub(" ", text).strip()


def _paragraphs(text: str) -> list[str]:
    # Click leaves out what follows "\f"; "\b" paragraphs keep their line breaks: not ours.
    shown = text.partition("\f")[0]
    return [p for p in shown.split("\n\n") if p.strip()]


def _one(paragraph: str, lang: str) -> str:
    """One paragraph in ``lang``; as it is without a translation, or in Click's no-rewrap form
    (``\\b``, its line breaks are the point)."""
    if paragraph.lstrip().startswith("\b"):
        return paragraph
    key = message_id(paragraph)
    found = translate(key, lang)
    if found != key:
        return found
    reworded = reword(key, [NEEDS_EXTRA], lang)
    return paragraph if reworded == key else reworded


def _walk(command: Any, path: str) -> Iterator[tuple[Any, str]]:
    yield command, path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, f"{path} {name}")


def translated(app: typer.Typer, lang: str) -> Any:
    """``app``'s Click command with its help texts in ``lang`` (English: as built)."""
    import typer.main

    from usina.cli.click_words import translate_command

    command = typer.main.get_command(app)
    chosen = normalize(lang) or DEFAULT
    if chosen == DEFAULT:
        return command
    for each, _path in _walk(command, "usina"):
        if each.help:
            each.help = "\n\n".join(_one(p, chosen) for p in _paragraphs(each.help))
        if each.short_help:
            each.short_help = _one(each.short_help, chosen)
        for param in each.params:
            if getattr(param, "help", None):
                param.help = _one(param.help, chosen)
        translate_command(each, chosen)  # Click's own words: "Usage:", the --help option
    return command


def help_texts(app: typer.Typer) -> Iterator[tuple[str, str, int, str]]:
    """Every help text of ``app``'s commands and options, as message ids, each with where it
    is written (file, line) and what shows it (``usina runs ls --limit``)."""
    import inspect
    from pathlib import Path

    import typer.main

    for command, path in _walk(typer.main.get_command(app), "usina"):
        callback = getattr(command, "callback", None)
        code = getattr(inspect.unwrap(callback), "__code__", None) if callback else None
        where = (Path(code.co_filename).as_posix(), code.co_firstlineno) if code else ("", 0)
        texts = _paragraphs(command.help or "")
        if command.short_help:
            texts.append(command.short_help)
        for text in texts:
            if not text.lstrip().startswith("\b"):
                yield message_id(text), where[0], where[1], path
        for param in command.params:
            if getattr(param, "help", None):
                shown = param.opts[0] if getattr(param, "opts", None) else param.name
                yield message_id(param.help), where[0], where[1], f"{path} {shown}"
