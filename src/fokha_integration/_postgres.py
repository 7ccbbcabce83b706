"""What the PostgreSQL backends share: the driver, the pool, the schema and its migrations.

Needs the ``[postgres]`` extra (``pip install 'fokha-integration[postgres]'``,
which installs asyncpg); this module imports ``asyncpg`` and only the PostgreSQL
backends import this module.

The schema is versioned: :data:`MIGRATIONS` lists every step, each applied once
and recorded in ``<prefix>schema_version``. :func:`migrate` runs the missing steps
in one transaction under a transaction-level advisory lock (keyed by the prefix),
so two processes migrating at once are safe: the second waits for the first and
then finds nothing left to do. ``fokha db migrate --dsn ...`` calls it; the
backends call it on first use unless told not to (``migrate=False``).

Why asyncpg and not psycopg 3: on this library's own statements (a claim upsert
per round trip; a ``SKIP LOCKED`` lease of 100 rows and a batched ack) asyncpg did
1.3x the claims and 1.2x the fetched-and-acknowledged rows per second of psycopg 3
in the same run (``benchmarks/bench_postgres_drivers.py``; figures in
docs/postgres.md).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from . import _validate as v
from .errors import ConfigError, map_backend_errors

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the PostgreSQL backends need the 'postgres' extra: "
        "pip install 'fokha-integration[postgres]'"
    ) from exc

__all__ = [
    "MIGRATIONS",
    "PostgresPool",
    "check_prefix",
    "connect",
    "create_pool",
    "migrate",
    "schema_version",
]

_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")


def check_prefix(prefix: object) -> str:
    """A table prefix: lower-case letters, digits and ``_``, at most 40 characters.

    It is pasted into identifiers, so nothing else is allowed (no quoting games).
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ConfigError("prefix", "must match [a-z_][a-z0-9_]{0,39}", prefix)
    return prefix


@dataclass(frozen=True, slots=True)
class PostgresPool:
    """Bounds and timeouts of the connection pool a PostgreSQL backend opens.

    ``min_size``/``max_size`` bound the pooled connections; ``connect_timeout`` bounds
    opening one, ``acquire_timeout`` the wait for a free one and ``command_timeout``
    every statement (a timeout raises
    :class:`~fokha_integration.errors.BackendUnavailableError`).
    ``max_idle`` closes connections unused that long (seconds).
    """

    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 10.0
    acquire_timeout: float = 10.0
    command_timeout: float = 30.0
    max_idle: float = 300.0

    def __post_init__(self) -> None:
        v.integer("min_size", self.min_size, minimum=0, maximum=1000)
        v.integer("max_size", self.max_size, minimum=1, maximum=1000)
        if self.min_size > self.max_size:
            raise ConfigError("min_size", "must be <= max_size", self.min_size)
        v.positive("connect_timeout", self.connect_timeout)
        v.positive("acquire_timeout", self.acquire_timeout)
        v.positive("command_timeout", self.command_timeout)
        v.positive("max_idle", self.max_idle)


async def create_pool(dsn: str, limits: PostgresPool) -> Any:
    """An asyncpg pool with ``limits`` (errors mapped to the library's tree)."""
    with map_backend_errors("postgres", "connect"):
        return await asyncpg.create_pool(
            dsn,
            min_size=limits.min_size,
            max_size=limits.max_size,
            timeout=limits.connect_timeout,
            command_timeout=limits.command_timeout,
            max_inactive_connection_lifetime=limits.max_idle,
        )


async def connect(dsn: str, *, timeout: float) -> Any:
    """One asyncpg connection (for the CLI and tests); ``timeout`` bounds connecting
    and every statement."""
    with map_backend_errors("postgres", "connect"):
        return await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout)


# Each step: (version, what it does, SQL with {p} for the prefix). Never edit a
# released step: add a new one.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "dedup entries",
        """
        CREATE TABLE {p}dedup (
            type        text NOT NULL,
            key         text NOT NULL,
            first_seen  float8 NOT NULL,
            expires_at  float8 NOT NULL,
            state       smallint NOT NULL,
            fingerprint text,
            token       text NOT NULL,
            result      bytea,
            PRIMARY KEY (type, key)
        );
        CREATE INDEX {p}dedup_expiry ON {p}dedup (expires_at);
        """,
    ),
    (
        2,
        "outbox: envelopes, pending rows per sink, owners' leases, dead letters",
        """
        CREATE TABLE {p}outbox_sinks (name text PRIMARY KEY);
        CREATE TABLE {p}outbox (
            seq         bigserial PRIMARY KEY,
            id          text NOT NULL UNIQUE,
            okey        text NOT NULL,
            data        text NOT NULL,
            enqueued_at float8 NOT NULL
        );
        CREATE TABLE {p}outbox_pending (
            sink        text NOT NULL,
            seq         bigint NOT NULL,
            okey        text NOT NULL,
            enqueued_at float8 NOT NULL,
            owner       text,
            held        boolean NOT NULL DEFAULT false,
            PRIMARY KEY (sink, seq)
        );
        CREATE INDEX {p}outbox_pending_key ON {p}outbox_pending (sink, okey, seq);
        CREATE INDEX {p}outbox_pending_owner ON {p}outbox_pending (owner)
            WHERE owner IS NOT NULL;
        CREATE TABLE {p}outbox_owners (
            name        text PRIMARY KEY,
            lease_until timestamptz NOT NULL
        );
        CREATE TABLE {p}outbox_dead (
            ref         bigserial PRIMARY KEY,
            sink        text NOT NULL,
            seq         bigint NOT NULL,
            data        text NOT NULL
        );
        CREATE INDEX {p}outbox_dead_seq ON {p}outbox_dead (seq);
        """,
    ),
)


def _lock_id(prefix: str) -> int:
    """A stable signed 64-bit advisory lock key for migrating ``prefix``'s tables."""
    digest = hashlib.sha256(f"fokha-migrate:{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def schema_version(conn: Any, prefix: str) -> int:
    """The highest migration applied to ``prefix``'s tables (0: none)."""
    check_prefix(prefix)
    with map_backend_errors("postgres", "schema_version"):
        table = f"{prefix}schema_version"
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        if not exists:
            return 0
        found = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {prefix}schema_version")
        return int(found)


async def migrate(conn: Any, prefix: str = "fokha_") -> list[int]:
    """Apply the missing migrations on ``conn``; the versions applied now (maybe none).

    One transaction under an advisory lock: concurrent callers are serialised and
    each step is applied exactly once. A database migrated by a newer release (a
    version this one does not know) is refused with :class:`ConfigError`.
    """
    check_prefix(prefix)
    applied: list[int] = []
    with map_backend_errors("postgres", "migrate"):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_id(prefix))
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {prefix}schema_version ("
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = int(
                await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {prefix}schema_version")
            )
            newest = MIGRATIONS[-1][0]
            if current > newest:
                raise ConfigError(
                    "prefix",
                    f"schema version {current} is newer than this release knows ({newest})",
                    prefix,
                )
            for version, name, sql in MIGRATIONS:
                if version <= current:
                    continue
                await conn.execute(sql.format(p=prefix))
                await conn.execute(
                    f"INSERT INTO {prefix}schema_version (version, name) VALUES ($1, $2)",
                    version,
                    name,
                )
                applied.append(version)
    return applied
