"""The words Click and Typer say themselves ("Usage:", "Options", "No such option: ..."), in the
reader's language.

Typer (0.28) says a few through the standard library's ``gettext.gettext``: its help panels'
titles and option notes (``typer/rich_utils.py``, ``typer/core.py``). ``TYPER_WORDS`` lists
those message ids, so they are in usina's catalogue, and ``usina.i18n.serve_gettext`` points
``gettext`` at it. Typer reads its panel titles once, when it first shows a help or an error,
which the CLI does after it chose the language.

The Click that Typer carries inside it (``typer._click``) writes its words in English, with no
``gettext``: ``CLICK_TEXTS`` are those texts as it formats them, and the CLI rewords them where
it shows them (``usage_line``, ``show_usage_error``, and the ``--help`` option's help in
``usina.cli.help.translated``). A text Click changes in a later version stays in English (the
tests pin the ones a newcomer meets).
"""

from __future__ import annotations

from typing import Any

import typer

from usina.i18n import DEFAULT, N_, _, language, reword, translate

__all__ = [
    "CLICK_TEXTS",
    "HELP_OPTION",
    "TYPER_WORDS",
    "USAGE",
    "show_usage_error",
    "translate_command",
    "usage_line",
]

#: What Typer passes to ``gettext.gettext``, exactly (typer/rich_utils.py, typer/core.py).
TYPER_WORDS = (
    N_("Arguments"),
    N_("Options"),
    N_("Commands"),
    N_("Error"),
    N_("Aborted."),
    N_("Aborted!"),
    N_("(deprecated) "),
    N_("[default: {}]"),
    N_("[env var: {}]"),
    N_("[required]"),
    N_("Try [blue]'{command_path} {help_option}'[/] for help."),
    N_("default: {default}"),
    N_("env var: {var}"),
    N_("required"),
    N_("(dynamic)"),
    N_("Missing command."),
    N_("No such command {name!r}."),
)

#: The first word of a usage line (``typer/_click/formatting.py``: "Usage: ").
USAGE = N_("Usage:")
#: The ``--help`` option's help (``typer/_click/decorators.py``).
HELP_OPTION = N_("Show this message and exit.")
#: A usage error's hint and line (``typer/_click/exceptions.py``).
TRY_HELP = N_("Try '{command} {option}' for help.")
ERROR_LINE = N_("Error: {message}")

#: The usage errors of Typer's Click as it formats them (``typer/_click``: exceptions.py,
#: parser.py, core.py, types.py), matched back where they are shown (``usina.i18n.reword``).
CLICK_TEXTS = (
    N_("No such option: {name}"),
    N_("No such option: {name} (Possible options: {options})"),
    N_("Missing argument {name}."),
    N_("Missing option {name}."),
    N_("Missing parameter {name}."),
    N_("Missing parameter: {name}"),
    N_("Invalid value: {message}"),
    N_("Invalid value for {name}: {message}"),
    N_("Got unexpected extra argument(s) ({args})"),
    N_("Option {name} does not take a value."),
    N_("Option {name} requires an argument."),
    N_("Option {name} requires {count} arguments."),
    N_("Argument {name} takes {count} values."),
    N_("{value} is not a valid {kind}."),
    N_("{value} is not in the range {range}."),
    N_("{value} is not a valid boolean. Recognized values: {states}"),
    N_("{value} is not one of {choices}."),
    N_("{value} is not {choice}."),
)


def usage_line(text: str, lang: str | None = None) -> str:
    """Click's usage line (``"Usage: usina runs ls [OPTIONS]"``) with its first word in
    ``lang`` (default: the current language)."""
    head, sep, rest = text.partition(" ")
    if not sep or head != USAGE:
        return text
    return f"{translate(USAGE, lang)} {rest}"


def translate_command(command: Any, lang: str) -> None:
    """``command`` (a Click command of the tree ``usina.cli.help.translated`` makes) shows its
    usage line and its ``--help`` option's help in ``lang``: Click makes both as it parses."""
    get_usage, get_help_option = command.get_usage, command.get_help_option

    def usage(ctx: Any) -> str:
        return usage_line(get_usage(ctx), lang)

    def help_option(ctx: Any) -> Any:
        option = get_help_option(ctx)
        if option is not None and option.help == HELP_OPTION:
            option.help = translate(HELP_OPTION, lang)
        return option

    command.get_usage = usage
    command.get_help_option = help_option


def _said(message: str) -> str:
    """A usage error's message in the reader's language; an inner one too ("Invalid value for
    '--limit': 'x' is not a valid integer.")."""
    return reword(message, CLICK_TEXTS, value=lambda inner: reword(inner, CLICK_TEXTS))


def show_usage_error(exc: Any) -> None:
    """Show a Click usage error as Click would (its usage line, how to get help, the error), in
    the reader's language. An error that shows something else (a group run without a command
    shows its help), and any error in English, shows itself."""
    shows = type(exc).show.__qualname__
    if language() == DEFAULT or shows not in ("UsageError.show", "ClickException.show"):
        exc.show()
        return
    ctx = getattr(exc, "ctx", None)
    color = getattr(ctx, "color", None)
    if ctx is not None:
        lines = [usage_line(ctx.get_usage())]
        if ctx.command.get_help_option(ctx) is not None:
            said = _(TRY_HELP).format(command=ctx.command_path, option=ctx.help_option_names[0])
            lines.append(said)
        typer.echo("\n".join(lines) + "\n", err=True, color=color)
    message = _(ERROR_LINE).format(message=_said(exc.format_message()))
    typer.echo(message, err=True, color=color)
