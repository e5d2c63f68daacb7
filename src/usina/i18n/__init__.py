"""usina's words in English and Brazilian Portuguese, from one gettext catalogue.

The English text is the message id (gettext's convention) and the fallback; the Portuguese
lives in ``locale/pt_BR/LC_MESSAGES/usina.po``, compiled beside it to ``usina.mo`` (committed,
so an install needs no compiler; ``scripts/i18n.py`` extracts, updates and compiles). Only the
standard library's ``gettext`` runs here.

Code marks a message with ``_("run {run} not found").format(run=...)`` (named placeholders,
never an f-string inside ``_()``), or with ``N_()`` where the text is defined and translated
later, at display time (advice, event names); stored records stay in English. A text stored
already formatted (an engine's retry reason, how a process ended) is matched back to its
``N_`` message where it is shown (``reword``); an error raised with ``error(Kind, N_(...))``
keeps its English ``str()`` and reads in the reader's language through ``error_text``.

Typer's own words ("Options", "Commands") come from this catalogue too: ``set_language``
points the standard library's ``gettext`` at it (``serve_gettext``).

The CLI's language: ``--lang``, else ``USINA_LANG``, else ``LC_ALL``/``LC_MESSAGES``/``LANG``
(``pt_BR.UTF-8`` -> pt-BR), else English (``language_from_env``). The web UI asks for a language
per request (``translate``).
"""

from __future__ import annotations

import functools
import gettext as _gettext
import os
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "DEFAULT",
    "EVENT_KINDS",
    "LANGS",
    "LOCALE_DIR",
    "N_",
    "Said",
    "_",
    "error",
    "error_as",
    "error_text",
    "event_name",
    "from_message_json",
    "language",
    "language_from_env",
    "mark",
    "message_json",
    "normalize",
    "reword",
    "serve_gettext",
    "set_language",
    "translate",
]

LANGS = ("en", "pt-BR")
DEFAULT = "en"
DOMAIN = "usina"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
#: Environment variables that choose the language, first match wins (POSIX order after ours).
ENV_VARS = ("USINA_LANG", "LC_ALL", "LC_MESSAGES", "LANG")

_state = {"lang": DEFAULT}
#: The environment variable the standard library's ``gettext`` reads its language from first.
_GETTEXT_ENV = "LANGUAGE"
_GETTEXT_BEFORE: dict[str, str | None] = {}


def N_(text: str) -> str:
    """Marks ``text`` for the catalogue without translating it (translated where shown)."""
    return text


def normalize(tag: str | None) -> str | None:
    """``pt-BR``, ``pt_BR.UTF-8``, ``pt`` -> ``"pt-BR"``; ``en_US``, ``C``, ``POSIX`` -> ``"en"``;
    None for an empty or unknown tag (the next source of a language is asked)."""
    if not tag:
        return None
    base = tag.split(".", 1)[0].split("@", 1)[0].replace("_", "-").lower()
    if base in ("c", "posix") or base == "en" or base.startswith("en-"):
        return "en"
    if base == "pt" or base.startswith("pt-"):
        return "pt-BR"
    return None


def language_from_env(environ: Mapping[str, str]) -> str:
    """The language the environment asks for (``ENV_VARS`` in order), else English. An unknown
    language in ``LANG`` (``fr_FR.UTF-8``) gives English, as ``gettext`` itself would."""
    for name in ENV_VARS:
        value = environ.get(name)
        if value:
            return normalize(value) or DEFAULT
    return DEFAULT


def set_language(lang: str) -> None:
    """The language of ``_()`` from now on in this process (the CLI sets it once per command),
    and of the words Typer says itself (``serve_gettext``)."""
    _state["lang"] = normalize(lang) or DEFAULT
    serve_gettext(_state["lang"])


def serve_gettext(lang: str) -> None:
    """Make the standard library's ``gettext.gettext`` answer from usina's catalogue in
    ``lang``: Typer says its own words ("Options", "Commands", "Arguments", "[default: {}]")
    through it (``usina.cli.click_words`` lists them, so they are in the catalogue).

    ``gettext.gettext`` looks in the default domain, in the language the environment names:
    ``textdomain``/``bindtextdomain`` are its documented way to choose the catalogue, and
    ``LANGUAGE``, which it reads before ``LC_ALL``/``LANG``, the language. Replacing the ``_``
    that Typer's modules imported would reach into their internals, and miss the next module
    that calls ``gettext``. English puts back the default domain and the ``LANGUAGE`` the
    process started with, so an English run, and the programs it starts, are as before."""
    if "language" not in _GETTEXT_BEFORE:
        _GETTEXT_BEFORE["language"] = os.environ.get(_GETTEXT_ENV)
        _GETTEXT_BEFORE["domain"] = _gettext.textdomain()
    if lang == DEFAULT:
        _gettext.textdomain(_GETTEXT_BEFORE["domain"])
        before = _GETTEXT_BEFORE["language"]
        if before is None:
            os.environ.pop(_GETTEXT_ENV, None)
        else:
            os.environ[_GETTEXT_ENV] = before
        return
    _gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
    _gettext.textdomain(DOMAIN)
    os.environ[_GETTEXT_ENV] = lang.replace("-", "_")  # gettext's folder name: pt_BR


def language() -> str:
    return _state["lang"]


@functools.cache
def _translations(lang: str) -> _gettext.NullTranslations:
    if lang == DEFAULT:
        return _gettext.NullTranslations()
    code = lang.replace("-", "_")  # gettext's folder name: pt_BR
    return _gettext.translation(DOMAIN, LOCALE_DIR, languages=[code], fallback=True)


def translate(message: str, lang: str | None = None) -> str:
    """``message`` (its English text) in ``lang`` (default: the current language); the English
    itself when the catalogue has no translation."""
    chosen = language() if lang is None else (normalize(lang) or DEFAULT)
    return _translations(chosen).gettext(message)


def _(message: str) -> str:
    """``message`` in the current language."""
    return _translations(language()).gettext(message)


#: Every event kind usina records (engine, server), marked so the catalogue names them; the
#: records keep the kind itself, English output shows it as is.
EVENT_KINDS = (
    N_("run_submitted"),
    N_("run_started"),
    N_("run_resumed"),
    N_("run_succeeded"),
    N_("run_failed"),
    N_("run_cancelled"),
    N_("run_triggered"),
    N_("cancel_requested"),
    N_("step_cached"),
    N_("step_cache_miss"),
    N_("step_rerun"),
    N_("step_retry"),
    N_("step_unused"),
    N_("step_skipped"),
    N_("step_succeeded"),
    N_("step_failed"),
    N_("attempt_started"),
    N_("attempt_running"),
    N_("attempt_succeeded"),
    N_("attempt_failed"),
    N_("tracker_error"),
    N_("notification_sent"),
    N_("notification_retry"),
    N_("notification_failed"),
)


def event_name(kind: str, lang: str | None = None) -> str:
    """An event's kind as shown to people: the kind itself in English (what tools and the docs
    name), a name in the language otherwise; an unknown kind stays as it is."""
    return translate(kind, lang)


def reword(
    text: str,
    templates: Iterable[str],
    lang: str | None = None,
    value: Callable[[str], str] | None = None,
) -> str:
    """A stored English ``text`` that one of ``templates`` made (an ``N_`` message formatted
    where it was made: an engine's reason, an attempt's message), in ``lang`` (default: the
    current language); ``text`` itself when none of them made it. The values keep their
    English (a signal name, a failure class) unless ``value`` rewords them (a stored text
    inside another). Where several match (``"..., limit {limit}"`` and ``"..., limit {limit}
    (last recorded ...)"``), the one with the most words of its own made it."""
    best: tuple[int, str, dict[str, str]] | None = None
    for template in templates:
        found = _pattern(template).fullmatch(text)
        if found is not None:
            own = sum(len(literal) for literal, *_rest in string.Formatter().parse(template))
            if best is None or own > best[0]:
                best = (own, template, found.groupdict())
    if best is None:
        return text
    values = best[2] if value is None else {k: value(v) for k, v in best[2].items()}
    return _fill(translate(best[1], lang), values)


@functools.cache
def _pattern(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    seen: set[str] = set()
    for literal, field, _spec, _conversion in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(f"(?P={field})" if field in seen else f"(?P<{field}>.+?)")
            seen.add(field)
    return re.compile("".join(parts), re.DOTALL)


def _fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each field replaced by its value as it was shown (already converted)."""
    parts: list[str] = []
    for literal, field, _spec, _conversion in string.Formatter().parse(template):
        parts.append(literal)
        if field is not None:
            parts.append(values.get(field, "{" + field + "}"))
    return "".join(parts)


class Said(str):
    """English ``parts`` (each a message of ``templates`` formatted where it was made, or any
    text) joined by ``sep``: a param of ``error`` that is plain English in ``str()`` and the
    API, and reads in the reader's language through ``error_text`` (a step's problems)."""

    parts: tuple[str, ...]
    templates: tuple[str, ...]
    sep: str

    def __new__(cls, parts: Iterable[str], templates: Iterable[str], sep: str = "; ") -> Said:
        items = tuple(parts)
        said = super().__new__(cls, sep.join(items))
        said.parts, said.templates, said.sep = items, tuple(templates), sep
        return said

    def translated(self, lang: str | None = None) -> str:
        def inner(value: str) -> str:
            return reword(value, self.templates, lang)

        return self.sep.join(reword(p, self.templates, lang, inner) for p in self.parts)


E = TypeVar("E", bound=BaseException)
_MARK = "_usina_message"


def error(kind: type[E], message: str, /, **params: object) -> E:
    """An exception of ``kind`` whose text is ``message`` (marked ``N_``) with ``params``: in
    English as ``str()`` (logs, the API, stored records), in the reader's language through
    ``error_text``. A param may itself be such an exception (a message that wraps another)."""
    return mark(kind(_format(message, params)), message, params)


def error_as(kind: type[E], exc: BaseException, /) -> E:
    """``exc``'s message as an exception of ``kind`` (a library error become a usina one): the
    same English text, and translated where shown when ``exc`` was made with ``error``."""
    marked = getattr(exc, _MARK, None)
    again = kind(str(exc))
    return again if marked is None else mark(again, *marked)


def mark(exc: E, message: str, params: Mapping[str, object]) -> E:
    """Say that ``exc`` was made from ``message`` and ``params`` (for an exception class that
    builds its own English text), so ``error_text`` can translate it."""
    setattr(exc, _MARK, (message, dict(params)))
    return exc


def _english(value: object) -> object:
    return str(value) if isinstance(value, BaseException) else value


def error_text(exc: BaseException, lang: str | None = None) -> str:
    """What ``exc`` says, in ``lang`` (default: the current language) when it was made with
    ``error``; other exceptions say ``str(exc)``."""
    marked = getattr(exc, _MARK, None)
    if marked is None:
        return str(exc)
    message, params = marked
    values = {k: _shown(v, lang) for k, v in params.items()}
    return translate(message, lang).format(**values)


def _shown(value: object, lang: str | None) -> object:
    if isinstance(value, BaseException):
        return error_text(value, lang)
    if isinstance(value, Said):
        return value.translated(lang)
    return value


def message_json(exc: BaseException) -> dict[str, Any]:
    """The message id and params of an exception made with ``error``, for an API's error body
    (``{"message_id": ..., "params": {...}}``), so a client shows it in its reader's language;
    ``{}`` for any other exception."""
    marked = getattr(exc, _MARK, None)
    if marked is None:
        return {}
    message, params = marked
    return {"message_id": message, "params": {k: _param_json(v) for k, v in params.items()}}


def _param_json(value: object) -> object:
    if isinstance(value, BaseException):
        return message_json(value) or str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def from_message_json(exc: E, body: Mapping[str, Any]) -> E:
    """``exc`` (a client's copy of a server's error, with the server's English text) marked with
    the ``message_id`` and ``params`` of its body, when the id is a message of this catalogue
    (an unknown one, from a newer server, keeps the English)."""
    said = _from_json(body)
    if said is None:
        return exc
    message, params = said
    return mark(exc, message, params)


def _from_json(body: Mapping[str, Any]) -> tuple[str, dict[str, object]] | None:
    message, params = body.get("message_id"), body.get("params")
    if not isinstance(message, str) or not isinstance(params, dict):
        return None
    if all(translate(message, lang) == message for lang in LANGS if lang != DEFAULT):
        return None  # not one of ours: its text is not formatted here
    values: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, dict):  # a message inside: one of ours too, or the English stays
            nested = _from_json(value)
            if nested is None:
                return None
            values[key] = mark(Exception(_format(*nested)), *nested)
        else:
            values[key] = value
    try:
        _format(message, values)
    except (KeyError, IndexError, ValueError, AttributeError):
        return None
    return message, values


def _format(message: str, params: Mapping[str, object]) -> str:
    return message.format(**{k: _english(v) for k, v in params.items()})
