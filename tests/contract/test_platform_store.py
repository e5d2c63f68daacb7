"""Contract of ``PlatformStore`` tokens on SQLite and PostgreSQL: what a presented token is
found to be (ok, malformed, unknown, wrong secret, revoked, expired) and token expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from usina.engine.records import RunState
from usina.stores.platform import PlatformStore, Role, TokenVerdict


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'usina.db'}"
    return str(request.getfixturevalue("postgres_server").create_database())


@pytest.fixture
def store(url: str) -> Iterator[PlatformStore]:
    platform = PlatformStore(url)
    yield platform
    platform.close()


def test_a_valid_token_is_ok_with_its_principal(store: PlatformStore) -> None:
    token, info = store.create_token("ci", {"fraud": Role.EDITOR})
    check = store.check_token(token)
    assert check.verdict == TokenVerdict.OK
    assert check.token_id == info.id
    assert check.principal is not None
    assert check.principal.can("fraud", Role.EDITOR)
    assert store.authenticate(token) == check.principal


def test_each_refusal_says_why_and_names_the_token_id_never_the_token(
    store: PlatformStore,
) -> None:
    token, info = store.create_token("ci", {"fraud": Role.VIEWER})
    prefix, token_id, secret = token.split("_", 2)
    cases = {
        "Bearer-less-garbage": (TokenVerdict.MALFORMED, None),
        f"{prefix}_{'x' * 40}_{secret}": (TokenVerdict.MALFORMED, None),
        f"{prefix}_{token_id}": (TokenVerdict.MALFORMED, None),
        f"{prefix}_ffffffffffff_{secret}": (TokenVerdict.UNKNOWN, "ffffffffffff"),
        f"{prefix}_{token_id}_{secret}x": (TokenVerdict.WRONG_SECRET, info.id),
    }
    for presented, (verdict, named) in cases.items():
        check = store.check_token(presented)
        assert (check.verdict, check.token_id, check.principal) == (verdict, named, None)
        assert store.authenticate(presented) is None
    store.revoke_token(info.id)
    check = store.check_token(token)
    assert (check.verdict, check.token_id, check.principal) == (TokenVerdict.REVOKED, info.id, None)


def test_a_token_stops_working_when_it_expires(store: PlatformStore) -> None:
    now = time.time()
    token, info = store.create_token("short", {"fraud": Role.VIEWER}, expires_at=now + 60)
    assert info.expires_at == now + 60
    assert store.get_token(info.id).expires_at == now + 60
    assert store.check_token(token, now=now + 59).verdict == TokenVerdict.OK
    expired = store.check_token(token, now=now + 60)
    assert (expired.verdict, expired.token_id, expired.principal) == (
        TokenVerdict.EXPIRED,
        info.id,
        None,
    )
    assert store.authenticate(token) is not None  # the real clock: not yet


def test_tokens_without_expiry_never_expire(store: PlatformStore) -> None:
    token, info = store.create_token("forever", {"*": Role.ADMIN})
    assert info.expires_at is None
    assert store.get_token(info.id).expires_at is None
    assert store.check_token(token, now=time.time() + 100 * 365 * 86400).verdict == "ok"


def test_a_token_cannot_be_created_already_expired(store: PlatformStore) -> None:
    with pytest.raises(ValueError, match="must expire in the future"):
        store.create_token("late", {"fraud": Role.VIEWER}, expires_at=time.time() - 1)
    assert store.list_tokens() == []


def test_claimable_runs_are_the_unleased_and_expired_ones_oldest_first(
    store: PlatformStore, url: str
) -> None:
    """A replica asks every pass what it could take: the runs nobody holds (or whose holder's
    lease expired), never the ones it holds already, thousands of them at scale."""
    from tests.contract.test_metadata_store import make_run
    from usina.stores.sql import SqlMetadataStore

    metadata = SqlMetadataStore(url)
    try:
        for i in range(6):
            metadata.create_run(make_run(f"c{i}", created_at=100.0 + i), [])
        finished = make_run("done", created_at=50.0, state=RunState.SUCCEEDED)
        metadata.create_run(finished, [])
        now = 1000.0
        assert metadata.acquire_lease("c0", "replica-a", 60, now)
        assert metadata.acquire_lease("c2", "replica-b", 60, now)
        assert metadata.acquire_lease("c3", "replica-b", 60, now - 100)  # expired at now
        assert store.claimable_runs("replica-a", now, 10) == ["c1", "c3", "c4", "c5"]
        assert store.claimable_runs("replica-a", now, 2) == ["c1", "c3"]
        assert store.claimable_runs("replica-b", now, 10) == ["c1", "c3", "c4", "c5"]
    finally:
        metadata.close()
