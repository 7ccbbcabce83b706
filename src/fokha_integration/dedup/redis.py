"""The Redis dedup backend: one key space shared by every process on every host.

Needs the ``redis`` extra (``pip install 'fokha-integration[redis]'``) and Redis
>= 7.0. Import it from here (``from fokha_integration.dedup.redis import
RedisDedupBackend``); the package root does not import redis-py.

**The claim is one command**, ``SET key value NX PX ttl GET``: it stores the entry
only when the key is absent (expired keys are absent: Redis expires them itself)
and returns the previous value otherwise, atomically. The value carries the first
sighting time, the expiry, the state (claimed, leased, done), a digest of the
fingerprint, the lease token and the committed result, so one round trip answers
FIRST, DUPLICATE, CONFLICT or IN_FLIGHT. A lease is the key's expiry itself: a
crashed holder's lease runs out on the server. ``commit`` and ``release`` are small
Lua scripts (check the token, then write or delete). ``claim_many`` pipelines the
SET commands (one round trip per batch, no transaction).

**Keys** are ``{namespace}:{type}:{{key}}`` — the namespace is required, and the
user key is a Redis Cluster hash tag, so every command touches one key in one slot
and batches split cleanly across cluster nodes. :meth:`clear` uses ``SCAN``, which
covers one server (on a cluster, run it per primary node).

Every redis-py error is translated by :func:`~fokha_integration.errors.map_backend_errors`
with the ``"redis"`` table (one for the whole library): connection, timeout, loading
and out-of-memory (``maxmemory`` reached) errors become
:class:`~fokha_integration.errors.BackendUnavailableError` (which ``fail_mode`` acts
on), anything else :class:`~fokha_integration.errors.BackendError`.
After the server comes back, the connection pool reconnects by itself.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

from .. import _validate
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import BackendError, ConfigError, map_backend_errors, translate_backend_error
from ._backend import CONFLICT, DUPLICATE, FIRST, IN_FLIGHT, ClaimResult, check_name, warn_aclose

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "RedisDedupBackend needs redis-py: pip install 'fokha-integration[redis]'"
    ) from exc

__all__ = ["RedisDedupBackend"]

_CLAIMED, _LEASED, _DONE = b"c", b"l", b"d"

# commit: KEYS[1]; ARGV = token ('' = any holder), now, expires_at, px, result
_COMMIT_LUA = """
local v = redis.call('GET', KEYS[1])
local first, fp, tok = ARGV[2], '', ARGV[1]
if v then
  local f, e, st, d, t = string.match(v, '^1|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
  if f then
    if ARGV[1] ~= '' and t ~= ARGV[1] then return 0 end
    first, fp, tok = f, d, t
  end
end
redis.call('SET', KEYS[1], '1|' .. first .. '|' .. ARGV[3] .. '|d|' .. fp .. '|' .. tok .. '|'
  .. ARGV[5], 'PX', ARGV[4])
return 1
"""

# release: KEYS[1]; ARGV = token ('' = any holder). Committed entries are kept.
_RELEASE_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local st, t = string.match(v, '^1|[^|]*|[^|]*|([^|]*)|[^|]*|([^|]*)|')
if st == 'd' then return 0 end
if ARGV[1] ~= '' and t ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _digest(fingerprint: str) -> bytes:
    # A fixed-size digest keeps the value parseable whatever the fingerprint holds.
    return hashlib.blake2b(fingerprint.encode("utf-8"), digest_size=16).hexdigest().encode()


def _parse(raw: bytes | str) -> tuple[float, float, bytes, bytes, bytes, bytes]:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    parts = data.split(b"|", 6)
    foreign = BackendError("redis", "a dedup key holds a value this library did not write")
    if len(parts) != 7 or parts[0] != b"1":
        raise foreign
    _, first, expires, state, fp, token, result = parts
    try:
        return float(first), float(expires), state, fp, token, result
    except ValueError:
        raise foreign from None


def _answer(key: str, raw: bytes | str, fingerprint: bytes | None) -> ClaimResult:
    first, expires, state, fp, _token, result = _parse(raw)
    if fingerprint is not None and fp and fp != fingerprint:
        status = CONFLICT
    elif state == _LEASED:
        status = IN_FLIGHT
    else:
        status = DUPLICATE
    stored = result if state == _DONE else None
    return ClaimResult(status, key, first, stored, expires)


class RedisDedupBackend:
    """Dedup entries in Redis (see the module docstring).

    Give either ``url`` (``redis://127.0.0.1:6379/0``; a client is made with
    ``socket_timeout`` and ``connect_timeout``) or a ready ``client`` (a
    ``redis.asyncio.Redis`` or ``RedisCluster``; its timeouts are yours to set).
    ``namespace`` is required and prefixes every key. ``clock`` gives the wall time
    recorded as ``first_seen``; expiry is kept by the Redis server.
    """

    name = "redis"

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str,
        client: Any = None,
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.namespace = check_name("namespace", namespace, config=True)
        if (url is None) == (client is None):
            raise ConfigError("url", "give exactly one of url= or client=", url)
        if url is not None:
            _validate.string("url", url)
        socket_timeout = _validate.positive("socket_timeout", socket_timeout)
        connect_timeout = _validate.positive("connect_timeout", connect_timeout)
        if client is None:
            assert url is not None
            client = aioredis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
            )
            self._owns_client = True
        else:
            self._owns_client = False
        self._r: Any = client
        self._clock = clock
        self._commit_script = client.register_script(_COMMIT_LUA)
        self._release_script = client.register_script(_RELEASE_LUA)
        self._prefix = f"{self.namespace}:"

    @property
    def evictions(self) -> int:
        """Always 0 here (Redis's own ``maxmemory`` evictions are counted by Redis)."""
        return 0

    def redis_key(self, type: str, key: str) -> str:
        """The Redis key of an entry: ``{namespace}:{type}:{{key}}``."""
        return f"{self._prefix}{type}:{{{key}}}"

    # -- claims -----------------------------------------------------------------

    async def claim(
        self, type: str, key: str, ttl: float, fingerprint: str | None, lease: float | None
    ) -> ClaimResult:
        """Atomically claim ``key`` with one ``SET NX PX GET``."""
        now = self._clock.time()
        span = ttl if lease is None else lease
        fp = b"" if fingerprint is None else _digest(fingerprint)
        token = secrets.token_hex(8) if lease is not None else ""
        state = "c" if lease is None else "l"
        value = f"1|{now:.6f}|{now + span:.6f}|{state}|".encode() + fp + f"|{token}|".encode()
        with map_backend_errors("redis", "claim"):
            # execute_command skips set()'s option building; get=True tells redis-py's
            # response callback to hand back the previous value.
            old = await self._r.execute_command(
                "SET",
                f"{self._prefix}{type}:{{{key}}}",
                value,
                "NX",
                "PX",
                max(1, int(span * 1000)),
                "GET",
                get=True,
            )
        if old is None:
            return ClaimResult(FIRST, key, now, None, now + span, token or None)
        return _answer(key, old, None if fingerprint is None else fp)

    async def claim_many(self, type: str, keys: Sequence[str], ttl: float) -> list[ClaimResult]:
        """Claim each key; one pipelined round trip (not a transaction)."""
        if not keys:
            return []
        now = self._clock.time()
        expires = now + ttl
        value = f"1|{now:.6f}|{expires:.6f}|c|||".encode()
        px = max(1, int(ttl * 1000))
        prefix = f"{self._prefix}{type}:{{"
        with map_backend_errors("redis", "claim_many"):
            async with self._r.pipeline(transaction=False) as pipe:
                command = pipe.execute_command
                for key in keys:
                    command("SET", f"{prefix}{key}}}", value, "NX", "PX", px, "GET", get=True)
                replies = await pipe.execute()
        out = []
        for key, old in zip(keys, replies, strict=True):
            if old is None:
                out.append(ClaimResult(FIRST, key, now, None, expires))
            elif isinstance(old, Exception):
                raise translate_backend_error("redis", old, "claim_many")
            else:
                out.append(_answer(key, old, None))
        return out

    # -- the rest ---------------------------------------------------------------

    async def peek(self, type: str, key: str) -> ClaimResult | None:
        """The live entry as a DUPLICATE or IN_FLIGHT result, or ``None``."""
        with map_backend_errors("redis", "peek"):
            raw = await self._r.get(self.redis_key(type, key))
        return None if raw is None else _answer(key, raw, None)

    async def commit(
        self, type: str, key: str, result: bytes, ttl: float, token: str | None
    ) -> bool:
        """Store ``result`` (a Lua script: check the token, then write)."""
        now = self._clock.time()
        args = [token or "", f"{now:.6f}", f"{now + ttl:.6f}", max(1, int(ttl * 1000)), result]
        with map_backend_errors("redis", "commit"):
            done = await self._commit_script(keys=[self.redis_key(type, key)], args=args)
        return bool(done)

    async def release(self, type: str, key: str, token: str | None) -> bool:
        """Drop a live, not committed entry (a Lua script: check the token, then delete)."""
        with map_backend_errors("redis", "release"):
            done = await self._release_script(keys=[self.redis_key(type, key)], args=[token or ""])
        return bool(done)

    async def forget(self, type: str, key: str) -> bool:
        """Delete the entry; whether one was there."""
        with map_backend_errors("redis", "forget"):
            return bool(await self._r.delete(self.redis_key(type, key)))

    async def clear(self, type: str | None) -> int:
        """Delete the namespace's entries (of ``type``, or all) with SCAN + UNLINK."""
        pattern = f"{self._prefix}{type}:*" if type is not None else f"{self._prefix}*"
        dropped = 0
        with map_backend_errors("redis", "clear"):
            batch: list[Any] = []
            async for name in self._r.scan_iter(match=pattern, count=1000):
                batch.append(name)
                if len(batch) >= 1000:
                    dropped += await self._r.unlink(*batch)
                    batch.clear()
            if batch:
                dropped += await self._r.unlink(*batch)
        return dropped

    async def ping(self) -> bool:
        """Whether the server answers (raises BackendUnavailableError when it does not)."""
        with map_backend_errors("redis", "ping"):
            return bool(await self._r.ping())

    async def close(self) -> None:
        """Close the client if this backend made it."""
        if self._owns_client:
            await self._r.aclose()

    async def aclose(self) -> None:
        """Deprecated alias of :meth:`close`."""
        warn_aclose(self)
        await self.close()

    def __repr__(self) -> str:
        return f"RedisDedupBackend(namespace={self.namespace!r})"
