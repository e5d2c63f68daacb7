"""Fixtures shared by every test directory, and the test tiers. Keep this small; fixtures used
by one file live in that file.

Tiers come from the folder a test lives in (``TIERS``): ``unit`` (hermetic, in-process, fast),
``contract`` (one suite per Protocol, every implementation), ``integration`` (real services,
processes, servers) and ``e2e`` (the examples end to end). Each test also gets its folder's name
as a marker (``-m serving``). ``make test-fast`` runs ``unit or contract``; a file in those
folders that starts the CLI or a server is listed in ``RETIERED`` and counted as
``integration`` until it moves to a folder of that tier.

Fuzz suites (Hypothesis) run a small default profile; ``USINA_FUZZ=deep`` loads the ``deep``
profile and multiplies the example count that a test sets for itself by ``DEEP_FACTOR``
(``tests/fuzz.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from tests.fuzz import DEEP_FACTOR, PROFILES
from tests.fuzz import PROFILE as FUZZ_PROFILE

TESTS = Path(__file__).resolve().parent
# The CLI speaks the locale's language (usina.i18n): tests see English unless they ask for
# another (tests/integration/test_cli_i18n.py), whatever the machine's LANG.
os.environ["USINA_LANG"] = "en"

# Folder under tests/ -> tier marker.
TIERS = {
    "unit": "unit",
    "contract": "contract",
    "integration": "integration",
    "k8s": "integration",
    "server": "integration",
    "serving": "integration",
    "monitoring": "integration",
    "deploy": "integration",
    "distributed": "integration",
    "benchmarks": "integration",
    "profile": "integration",
    "images": "integration",
    "llm": "integration",
    "mcp": "integration",
    "fraud": "e2e",
    "docs": "e2e",
    "e2e": "e2e",
}
TIER_NAMES = frozenset(TIERS.values())
# Seconds a test of the tier may take unless it sets its own ``pytest.mark.timeout``; the
# rest get pyproject's ``timeout``.
TIER_TIMEOUTS = {"unit": 30, "contract": 60}
# Tests whose folder's tier does not fit them, until their file moves (node-id prefix -> tier
# and a marker saying why): they run in `make test`, not in `make test-fast`.
RETIERED = {
    "tests/unit/test_cli_usage.py::": ("integration", "subprocess"),  # the CLI, seconds a test
    "tests/contract/test_artifact_store_s3.py::": ("integration", "service"),  # starts SeaweedFS
}

hypothesis_settings.register_profile("default", deadline=None, print_blob=True)
hypothesis_settings.register_profile(
    "deep", deadline=None, print_blob=True, max_examples=100 * DEEP_FACTOR
)


def pytest_configure(config: pytest.Config) -> None:
    if FUZZ_PROFILE not in PROFILES:
        raise pytest.UsageError(f"USINA_FUZZ={FUZZ_PROFILE!r}: expected one of {PROFILES}")
    hypothesis_settings.load_profile(FUZZ_PROFILE)


def pytest_report_header(config: pytest.Config) -> str:
    return f"usina: hypothesis profile {FUZZ_PROFILE!r} (USINA_FUZZ=deep for more examples)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.relative_to(TESTS).parts[0]
        except ValueError:
            continue
        tier = TIERS.get(folder)
        for prefix, (moved_to, why) in RETIERED.items():
            if item.nodeid.startswith(prefix):
                tier = moved_to
                item.add_marker(getattr(pytest.mark, why))
        if tier is None:
            raise pytest.UsageError(
                f"{item.nodeid}: tests/{folder} has no tier; add it to TIERS in tests/conftest.py"
            )
        item.add_marker(getattr(pytest.mark, tier))
        if folder not in TIER_NAMES:  # tests/serving -> also "serving"
            item.add_marker(getattr(pytest.mark, folder))
        timeout = TIER_TIMEOUTS.get(tier)
        if timeout is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(timeout))
        if FUZZ_PROFILE == "deep":
            _deepen(item)


def _deepen(item: pytest.Item) -> None:
    """Multiply the example count a Hypothesis test sets with ``@settings`` by DEEP_FACTOR."""
    test = getattr(item, "obj", None)
    if not getattr(test, "is_hypothesis_test", False):
        return
    if getattr(test, "_usina_deepened", False):  # parametrized: one function, many items
        return
    own = test._hypothesis_internal_use_settings
    test._hypothesis_internal_use_settings = hypothesis_settings(
        own, max_examples=max(own.max_examples * DEEP_FACTOR, 100 * DEEP_FACTOR)
    )
    test._usina_deepened = True


POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USERS = ("postgres", "root")


class PostgresServer:
    """The PostgreSQL server at 127.0.0.1:5432: makes fresh databases, drops them at the end."""

    def __init__(self) -> None:
        import psycopg

        errors: list[str] = []
        for user in POSTGRES_USERS:
            try:
                self._conn: Any = psycopg.connect(
                    host=POSTGRES_HOST,
                    port=POSTGRES_PORT,
                    user=user,
                    dbname="test",
                    autocommit=True,
                    connect_timeout=5,
                )
            except psycopg.Error as exc:
                errors.append(f"{user}: {str(exc).strip()}")
                continue
            self.user = user
            self._created: list[str] = []
            return
        pytest.fail(
            f"PostgreSQL at {POSTGRES_HOST}:{POSTGRES_PORT} did not answer "
            f"({'; '.join(errors)}); start it with `make services`. These tests never skip.",
            pytrace=False,
        )

    def create_database(self) -> str:
        """A new, uniquely named, empty database; returns its URL."""
        name = f"usina_test_{uuid.uuid4().hex[:12]}"
        self._conn.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return f"postgresql://{self.user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"

    def close(self) -> None:
        for name in self._created:
            self._conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Fails (never skips) when PostgreSQL does not answer."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    return postgres_server.create_database()
