"""``usina token``: create, list and revoke the platform server's API tokens, straight in the
metadata database (the first admin token can only be made this way)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console

from usina.cli.settings import Settings
from usina.i18n import N_, _, error

tokens_app = typer.Typer(help="API tokens of the platform server.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)

DatabaseOpt = Annotated[
    str | None, typer.Option(help="metadata database (default: USINA_DATABASE_URL)")
]


# Tokens made here expire unless asked not to, like the server's (GuardSettings).
DEFAULT_EXPIRES = "90d"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _store(database_url: str | None):  # type: ignore[no-untyped-def]
    from usina.stores.platform import PlatformStore

    return PlatformStore(database_url or Settings.from_env().database_url)


@tokens_app.command("create")
def create(
    project: Annotated[str, typer.Option(help="project the role is in; '*' for every project")],
    role: Annotated[str, typer.Option(help="viewer, editor or admin")],
    name: Annotated[str | None, typer.Option(help="who or what will use it")] = None,
    expires: Annotated[
        str,
        typer.Option(
            envvar="USINA_TOKEN_EXPIRES",
            help="how long it works: 30d, 12h, 2w, or 'never'",
        ),
    ] = DEFAULT_EXPIRES,
    database_url: DatabaseOpt = None,
) -> None:
    """Create a token and print it once; only its hash is stored."""
    from usina.durations import parse_duration
    from usina.errors import DefinitionError
    from usina.stores.platform import Role

    try:
        parsed = Role.parse(role)
        lifetime = parse_duration(expires)
    except ValueError as exc:
        if "duration" in str(exc):
            raise error(DefinitionError, N_("{error} (--expires)"), error=exc) from exc
        raise DefinitionError(str(exc)) from exc
    expires_at = time.time() + lifetime if lifetime is not None else None
    store = _store(database_url)
    try:
        token, info = store.create_token(
            name or f"{parsed.label}@{project}",
            {project: parsed},
            created_by="cli",
            expires_at=expires_at,
        )
        store.audit(
            "cli",
            "token.create",
            project=project,
            target=info.id,
            detail={"role": role, "expires_at": expires_at},
        )
    finally:
        store.close()
    typer.echo(token)
    until = _when(expires_at) if expires_at is not None else _("never")
    typer.echo(
        _("token {token} ({role} in {project}, expires {until}); it is not shown again").format(
            token=info.id, role=parsed.label, project=project, until=until
        ),
        err=True,
    )


@tokens_app.command("ls")
def ls(database_url: DatabaseOpt = None) -> None:
    """List tokens (ids, names and roles; never the tokens themselves)."""
    store = _store(database_url)
    try:
        found = store.list_tokens()
    finally:
        store.close()
    from rich.table import Table

    table = Table()
    for col in (N_("id"), N_("name"), N_("roles"), N_("created"), N_("expires"), N_("revoked")):
        table.add_column(_(col))
    now = time.time()
    for t in found:
        expires = _("never")
        if t.expires_at is not None:
            expires = _when(t.expires_at) + (_(" (expired)") if t.expires_at <= now else "")
        table.add_row(
            t.id,
            t.name,
            ", ".join(f"{r}@{p}" for p, r in t.roles.items()),
            _when(t.created_at),
            expires,
            _when(t.revoked_at) if t.revoked_at else "",
        )
    out.print(table)


@tokens_app.command("revoke")
def revoke(token_id: str, database_url: DatabaseOpt = None) -> None:
    """Revoke a token by its id (servers stop accepting it within seconds)."""
    store = _store(database_url)
    try:
        store.revoke_token(token_id)
        store.audit("cli", "token.revoke", project=None, target=token_id)
    finally:
        store.close()
    typer.echo(_("token {token} revoked").format(token=token_id))
