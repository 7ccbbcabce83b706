"""The private PostgreSQL server the tests start answers queries and is not the shared one."""

from __future__ import annotations

from tests.support import PostgresServer


def test_private_postgres_answers(postgres_server: PostgresServer, postgres_dsn: str) -> None:
    """A fresh database on the private server runs SQL, on a port other than 5432."""
    assert postgres_server.port != 5432
    assert str(postgres_server.port) in postgres_dsn
    database = postgres_dsn.rsplit("/", 1)[1]
    assert postgres_server.psql("SELECT current_database()", database).strip() == database
