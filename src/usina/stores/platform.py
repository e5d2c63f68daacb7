"""The platform server's store: API tokens and project roles, the audit log, serving
endpoints, and the run queries a multi-replica server needs beyond ``MetadataStore``.

It works on the same database as ``SqlMetadataStore`` (same URL, its own connection pool),
opened by the same factory (``usina.stores.database``: SQLite's busy timeout, WAL and
``BEGIN IMMEDIATE`` writers, the checks and migrations). Tokens look like
``usn_<id>_<secret>``: the id finds the row, and only the sha256 of the whole token is stored,
compared in constant time.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from usina.engine.records import RunState
from usina.errors import NotFoundError, StateError
from usina.stores.database import SqlStore
from usina.stores.sql_schema import (
    api_tokens,
    audit_log,
    endpoints,
    projects,
    runs,
    steps,
    token_roles,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

ALL_PROJECTS = "*"
_TOKEN_PREFIX = "usn_"
_TOKEN_ID_MAX = 32  # api_tokens.id: longer ids are not ours (and would not fit the column)


class Role(enum.IntEnum):
    """What a token may do in a project; each role includes the ones below it."""

    VIEWER = 1  # read runs, logs, artifacts, models, endpoints
    EDITOR = 2  # submit, cancel and resume runs; promote models
    ADMIN = 3  # create and revoke tokens, read the audit log, register endpoints

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown role {value!r}; roles are viewer, editor and admin"
            ) from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: a token, and its role in each project ("*": every project)."""

    token_id: str
    name: str
    roles: Mapping[str, Role] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.token_id})"

    def role_in(self, project: str) -> Role | None:
        found = [r for p, r in self.roles.items() if p in (project, ALL_PROJECTS)]
        return max(found) if found else None

    def can(self, project: str, role: Role) -> bool:
        held = self.role_in(project)
        return held is not None and held >= role

    def visible_projects(self) -> frozenset[str] | None:
        """The projects it may read; None when it may read every project."""
        if ALL_PROJECTS in self.roles:
            return None
        return frozenset(self.roles)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    created_at: float
    created_by: str
    revoked_at: float | None
    roles: dict[str, str]
    expires_at: float | None = None  # seconds since the epoch; None: never


class TokenVerdict(enum.StrEnum):
    """What checking a presented token found; only ``OK`` lets the request through."""

    OK = "ok"
    MALFORMED = "malformed"  # not shaped like usn_<id>_<secret>
    UNKNOWN = "unknown"  # no token has this id
    WRONG_SECRET = "wrong_secret"  # the id exists, the secret does not match
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of ``PlatformStore.check_token``: the verdict, the token's id when the token
    was shaped like one (for the audit log: never the token itself), and the principal if OK."""

    verdict: TokenVerdict
    token_id: str | None = None
    principal: Principal | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    project: str | None
    target: str | None
    outcome: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    project: str
    url: str
    created_at: float


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run as the runs list shows it: no plan, and its steps counted by state."""

    id: str
    pipeline: str
    project: str
    state: RunState
    created_at: float
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool
    error: str | None
    params: dict[str, Any]
    labels: dict[str, str]
    step_states: dict[str, int]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def encode_cursor(created_at: float, run_id: str) -> str:
    raw = json.dumps([created_at, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (created_at, id) a page ends at; ValueError when ``cursor`` is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a cursor of this server: {cursor!r}") from exc
    if not isinstance(created_at, int | float) or isinstance(created_at, bool):
        raise ValueError(f"not a cursor of this server: {cursor!r}")
    if not isinstance(run_id, str):
        raise ValueError(f"not a cursor of this server: {cursor!r}")
    return float(created_at), run_id


_UNFINISHED = (RunState.PENDING.value, RunState.RUNNING.value)
_LIST_COLUMNS = [
    runs.c.id,
    runs.c.pipeline,
    runs.c.project,
    runs.c.state,
    runs.c.created_at,
    runs.c.started_at,
    runs.c.finished_at,
    runs.c.cancel_requested,
    runs.c.error,
    runs.c.params,
    runs.c.labels,
]


class PlatformStore(SqlStore):
    """Tokens, roles, audit log, endpoints and server-side run queries, in SQL."""

    kind = "platform store"

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    # -- tokens and roles ------------------------------------------------------------------

    def create_token(
        self,
        name: str,
        roles: Mapping[str, Role],
        *,
        created_by: str = "cli",
        expires_at: float | None = None,
    ) -> tuple[str, TokenInfo]:
        """A new token with ``roles``; returns the token (shown once) and what is stored.

        expires_at: when it stops working, in seconds since the epoch; None: never."""
        if not roles:
            raise ValueError("a token needs a role in at least one project")
        now = time.time()
        if expires_at is not None and expires_at <= now:
            raise ValueError(
                f"a token must expire in the future; expires_at={expires_at} is "
                f"{now - expires_at:.0f} s ago"
            )
        token_id = secrets.token_hex(6)
        token = f"{_TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        with self._conn("creating a token") as conn:
            conn.execute(
                sa.insert(api_tokens).values(
                    id=token_id,
                    name=name,
                    token_hash=hash_token(token),
                    created_at=now,
                    created_by=created_by,
                    revoked_at=None,
                    expires_at=expires_at,
                )
            )
            for project, role in roles.items():
                exists = conn.execute(
                    sa.select(projects.c.name).where(projects.c.name == project)
                ).first()
                if exists is None and project != ALL_PROJECTS:
                    conn.execute(sa.insert(projects).values(name=project, created_at=now))
                conn.execute(
                    sa.insert(token_roles).values(
                        token_id=token_id, project=project, role=role.label
                    )
                )
        info = TokenInfo(
            token_id,
            name,
            now,
            created_by,
            None,
            {p: r.label for p, r in roles.items()},
            expires_at,
        )
        return token, info

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked, unexpired token; None otherwise."""
        return self.check_token(token).principal

    def check_token(self, token: str, *, now: float | None = None) -> TokenCheck:
        """Check a presented token and say why it is refused (``TokenVerdict``).

        now: the time to check expiry against (seconds since the epoch; default: the clock)."""
        if not token.startswith(_TOKEN_PREFIX):
            return TokenCheck(TokenVerdict.MALFORMED)
        token_id, sep, _secret = token[len(_TOKEN_PREFIX) :].partition("_")
        if not sep or not token_id or len(token_id) > _TOKEN_ID_MAX:
            return TokenCheck(TokenVerdict.MALFORMED)
        with self._conn("checking a token", write=False) as conn:
            row = (
                conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id))
                .mappings()
                .first()
            )
            if row is None:
                hmac.compare_digest(hash_token(token), "0" * 64)  # same work either way
                return TokenCheck(TokenVerdict.UNKNOWN, token_id)
            if not hmac.compare_digest(hash_token(token), str(row["token_hash"])):
                return TokenCheck(TokenVerdict.WRONG_SECRET, token_id)
            if row["revoked_at"] is not None:
                return TokenCheck(TokenVerdict.REVOKED, token_id)
            expires_at = row["expires_at"]
            if expires_at is not None and expires_at <= (time.time() if now is None else now):
                return TokenCheck(TokenVerdict.EXPIRED, token_id)
            roles = conn.execute(
                sa.select(token_roles.c.project, token_roles.c.role).where(
                    token_roles.c.token_id == token_id
                )
            ).all()
        principal = Principal(
            token_id=token_id,
            name=str(row["name"]),
            roles={str(p): Role.parse(str(r)) for p, r in roles},
        )
        return TokenCheck(TokenVerdict.OK, token_id, principal)

    def list_tokens(self, projects_: Collection[str] | None = None) -> list[TokenInfo]:
        """Tokens with a role in one of ``projects_`` (every token when None)."""
        with self._conn("listing tokens", write=False) as conn:
            roles = conn.execute(sa.select(token_roles)).mappings().all()
            rows = (
                conn.execute(sa.select(api_tokens).order_by(api_tokens.c.created_at))
                .mappings()
                .all()
            )
        by_token: dict[str, dict[str, str]] = {}
        for r in roles:
            by_token.setdefault(str(r["token_id"]), {})[str(r["project"])] = str(r["role"])
        found = []
        for row in rows:
            held = by_token.get(str(row["id"]), {})
            if projects_ is not None and not set(held) & set(projects_):
                continue
            found.append(
                TokenInfo(
                    id=str(row["id"]),
                    name=str(row["name"]),
                    created_at=float(row["created_at"]),
                    created_by=str(row["created_by"]),
                    revoked_at=row["revoked_at"],
                    roles=held,
                    expires_at=row["expires_at"],
                )
            )
        return found

    def get_token(self, token_id: str) -> TokenInfo:
        for info in self.list_tokens():
            if info.id == token_id:
                return info
        raise NotFoundError(f"token {token_id!r} does not exist")

    def revoke_token(self, token_id: str) -> TokenInfo:
        with self._conn(f"revoking token {token_id!r}") as conn:
            done = conn.execute(
                sa.update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        info = self.get_token(token_id)
        if not done and info.revoked_at is None:  # pragma: no cover - raced with a delete
            raise StateError(f"token {token_id!r} could not be revoked")
        return info

    def list_projects(self) -> list[str]:
        with self._conn("listing projects", write=False) as conn:
            rows = conn.execute(sa.select(projects.c.name).order_by(projects.c.name)).all()
        return [str(r[0]) for r in rows]

    # -- audit log -------------------------------------------------------------------------

    def audit(
        self,
        actor: str,
        action: str,
        *,
        project: str | None,
        target: str | None,
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        with self._conn(f"writing the audit entry {action!r}") as conn:
            conn.execute(
                sa.insert(audit_log).values(
                    at=time.time(),
                    actor=actor[:300],
                    action=action[:100],
                    project=project[:200] if project is not None else None,
                    target=target[:300] if target is not None else None,
                    outcome=outcome,
                    detail=json.loads(json.dumps(dict(detail or {}), default=str)),
                )
            )

    def list_audit(
        self,
        *,
        projects_: Collection[str] | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[AuditEntry]:
        query = sa.select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
        if projects_ is not None:
            query = query.where(audit_log.c.project.in_(list(projects_)))
        if before is not None:
            query = query.where(audit_log.c.seq < before)
        with self._conn("reading the audit log", write=False) as conn:
            rows = conn.execute(query).mappings().all()
        return [
            AuditEntry(
                seq=int(r["seq"]),
                at=float(r["at"]),
                actor=str(r["actor"]),
                action=str(r["action"]),
                project=r["project"],
                target=r["target"],
                outcome=str(r["outcome"]),
                detail=dict(r["detail"] or {}),
            )
            for r in rows
        ]

    # -- serving endpoints -----------------------------------------------------------------

    def put_endpoint(self, name: str, project: str, url: str) -> Endpoint:
        now = time.time()
        with self._conn(f"registering endpoint {name!r}") as conn:
            conn.execute(sa.delete(endpoints).where(endpoints.c.name == name))
            conn.execute(
                sa.insert(endpoints).values(name=name, project=project, url=url, created_at=now)
            )
        return Endpoint(name, project, url, now)

    def delete_endpoint(self, name: str) -> None:
        with self._conn(f"removing endpoint {name!r}") as conn:
            conn.execute(sa.delete(endpoints).where(endpoints.c.name == name))

    def list_endpoints(self, projects_: Collection[str] | None = None) -> list[Endpoint]:
        query = sa.select(endpoints).order_by(endpoints.c.name)
        if projects_ is not None:
            query = query.where(endpoints.c.project.in_(list(projects_)))
        with self._conn("listing endpoints", write=False) as conn:
            rows = conn.execute(query).mappings().all()
        return [
            Endpoint(str(r["name"]), str(r["project"]), str(r["url"]), float(r["created_at"]))
            for r in rows
        ]

    # -- runs ------------------------------------------------------------------------------

    def runs_page(
        self,
        *,
        projects_: Collection[str] | None,
        limit: int = 50,
        after: tuple[float, str] | None = None,
        state: RunState | None = None,
        pipeline: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[RunRow]:
        """Runs newest first, after the keyset position ``after`` (created_at, id)."""
        query = sa.select(*_LIST_COLUMNS)
        if projects_ is not None:
            query = query.where(runs.c.project.in_(sorted(projects_)))
        if state is not None:
            query = query.where(runs.c.state == RunState(state).value)
        if pipeline is not None:
            query = query.where(runs.c.pipeline == pipeline)
        if ids is not None:
            query = query.where(runs.c.id.in_(list(ids)))
        if after is not None:
            query = query.where(sa.tuple_(runs.c.created_at, runs.c.id) < sa.tuple_(*after))
        query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        with self._conn("listing runs", write=False) as conn:
            rows = conn.execute(query).mappings().all()
            counts: dict[str, dict[str, int]] = {}
            if rows:
                grouped = conn.execute(
                    sa.select(steps.c.run_id, steps.c.state, sa.func.count())
                    .where(steps.c.run_id.in_([r["id"] for r in rows]))
                    .group_by(steps.c.run_id, steps.c.state)
                ).all()
                for run_id, step_state, n in grouped:
                    counts.setdefault(str(run_id), {})[str(step_state)] = int(n)
        return [
            RunRow(
                id=str(r["id"]),
                pipeline=str(r["pipeline"]),
                project=str(r["project"]),
                state=RunState(r["state"]),
                created_at=float(r["created_at"]),
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                cancel_requested=bool(r["cancel_requested"]),
                error=r["error"],
                params=dict(r["params"] or {}),
                labels=dict(r["labels"] or {}),
                step_states=counts.get(str(r["id"]), {}),
            )
            for r in rows
        ]

    def claimable_runs(self, owner: str, now: float, limit: int) -> list[str]:
        """Unfinished runs, oldest first, whose lease is free or expired: what ``owner`` could
        take. The runs it holds are not listed (a replica holding thousands asked for them all
        on every pass, which made its pass grow with what it held); ``owner``, a driver's
        unique name, is kept for stores that answer differently for it."""
        free = sa.or_(
            runs.c.lease_owner.is_(None),
            runs.c.lease_expires.is_(None),
            runs.c.lease_expires <= now,
        )
        query = (
            sa.select(runs.c.id)
            .where(runs.c.state.in_(_UNFINISHED), free)
            .order_by(runs.c.created_at, runs.c.id)
            .limit(limit)
        )
        with self._conn("finding runs to drive", write=False) as conn:
            return [str(r[0]) for r in conn.execute(query).all()]

    def lease_holders(self) -> dict[str, str]:
        """Unfinished run id -> the owner of its lease (for operators and tests)."""
        query = sa.select(runs.c.id, runs.c.lease_owner).where(runs.c.state.in_(_UNFINISHED))
        with self._conn("reading leases", write=False) as conn:
            return {str(r[0]): str(r[1] or "") for r in conn.execute(query).all()}

    def step_metrics(
        self, pipeline: str, *, projects_: Collection[str] | None, limit: int = 50
    ) -> list[tuple[str, float, str, dict[str, float]]]:
        """(run id, created_at, step, metrics) of the newest ``limit`` runs of ``pipeline``."""
        recent = sa.select(runs.c.id, runs.c.created_at).where(runs.c.pipeline == pipeline)
        if projects_ is not None:
            recent = recent.where(runs.c.project.in_(sorted(projects_)))
        sub = recent.order_by(runs.c.created_at.desc()).limit(limit).subquery()
        query = (
            sa.select(sub.c.id, sub.c.created_at, steps.c.node, steps.c.metrics)
            .join(steps, steps.c.run_id == sub.c.id)
            .order_by(sub.c.created_at, steps.c.node)
        )
        with self._conn(f"reading the metrics of pipeline {pipeline!r}", write=False) as conn:
            rows = conn.execute(query).all()
        return [
            (str(r[0]), float(r[1]), str(r[2]), {k: float(v) for k, v in (r[3] or {}).items()})
            for r in rows
            if r[3]
        ]
