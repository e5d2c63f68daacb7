"""Fixtures shared by every test directory. Keep this small; fixtures used by one file live
in that file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

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
