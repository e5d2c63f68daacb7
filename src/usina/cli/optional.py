"""Commands that come with an extra: ``serve`` (serving), ``server`` (server) and ``deploy``
(deploy). Without its extra a command is still listed, and running it prints the
``pip install 'usina[EXTRA]'`` line instead of "No such command"."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import typer

from usina.errors import MissingExtraError

#: command name -> (module, function, extra)
OPTIONAL: dict[str, tuple[str, str, str]] = {
    "serve": ("usina.serving.cli", "serve", "serving"),
    "server": ("usina.server.cli", "server", "server"),
    "deploy": ("usina.deploy.cli", "deploy", "deploy"),
}


def _missing(name: str, module: str, extra: str) -> Callable[..., None]:
    def command(ctx: typer.Context) -> None:
        raise MissingExtraError(module, extra)

    command.__doc__ = f"(needs: pip install 'usina[{extra}]')"
    command.__name__ = name
    return command


def load_command(module: str, function: str) -> Any:
    """The command function, or ImportError when its extra is not installed."""
    return getattr(importlib.import_module(module), function)


def register_optional(app: typer.Typer, only: str | None = None) -> None:
    """Add the optional commands to ``app`` (``only``: that one alone)."""
    registered = {c.name for c in app.registered_commands}
    for name, (module, function, extra) in OPTIONAL.items():
        if name in registered or (only is not None and name != only):
            continue
        try:
            command = load_command(module, function)
        except ImportError as exc:
            missing = exc.name or module
            app.command(
                name=name,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                add_help_option=False,
            )(_missing(name, missing, extra))
        else:
            app.command(name=name)(command)
