"""Contract of ``PlatformStore`` tokens on SQLite and PostgreSQL: what a presented token is
found to be (ok, malformed, unknown, wrong secret, revoked, expired) and token expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from usina.stores.platform import PlatformStore, Role, TokenVerdict


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PlatformStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'usina.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database()
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
