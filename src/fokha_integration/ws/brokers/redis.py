"""The Redis broker: several server processes share channels (the ``[redis]`` extra).

Per channel, Redis holds

* ``<prefix>:{<channel>}:seq`` - the sequence counter (``INCR``);
* ``<prefix>:{<channel>}:epoch`` - the epoch;
* ``<prefix>:{<channel>}:boot`` - the ``run_id`` of the Redis process that started
  the epoch;
* ``<prefix>:{<channel>}:log`` - a Redis Stream of the last ``history`` messages,
  entry id ``<seq>-1``, so recovery is an ``XRANGE`` from ``since + 1``.

A new epoch starts whenever the stream's history can have moved backwards: the
counter starts over (a flushed or new Redis), the epoch key is missing, the Redis
process is not the one that started the epoch (it restarted: an RDB snapshot or an
``appendfsync everysec`` AOF may have brought back an older state, in which sequence
numbers would silently repeat), or the stream's last id is not the counter's previous
value. The script reads ``run_id`` itself, so a node never trusts a cached value.

One Lua script numbers, stores and ``PUBLISH``es a message atomically, so the order
on the pub/sub channel ``<prefix>:fanout`` is the sequence order. Every node
subscribes to it and delivers to its own clients. When a node's pub/sub connection
drops it reconnects and back-fills what it missed from the streams, and a jump in
a channel's sequence seen on pub/sub is filled from the stream before delivery: the
fan-out does not go deaf silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ... import _validate
from ..._aio import cancel_and_wait
from ...errors import BackendUnavailableError, ClosedError, map_backend_errors
from .._channels import (
    ChannelLimitError,
    Message,
    Recovery,
    make_message,
    new_epoch,
    recover_from,
)
from .._protocol import Position

if TYPE_CHECKING:
    from . import Deliver

__all__ = ["RedisBroker"]

try:
    import redis.asyncio as _redis
    from redis.exceptions import RedisError as _RedisError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("RedisBroker needs redis-py: pip install 'fokha-integration[redis]'") from exc

_PUBLISH = """
local boot = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
local seq = redis.call('INCR', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
local fresh = seq == 1 or not epoch or redis.call('GET', KEYS[4]) ~= boot
if not fresh then
  local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
  fresh = not last or last[1] ~= (seq - 1) .. '-1'
end
if fresh then
  epoch = ARGV[1]
  seq = 1
  redis.call('SET', KEYS[1], 1)
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[4], boot)
  redis.call('DEL', KEYS[3])
end
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[2], seq .. '-1', 'd', ARGV[3], 't', ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6] .. '\\n' .. epoch .. '\\n' .. seq .. '\\n' .. ARGV[4]
  .. '\\n' .. ARGV[3])
return {epoch, seq}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBroker:
    """A :class:`~fokha_integration.ws.brokers.Broker` on Redis (see the module docstring).

    ``url``: a ``redis://`` URL (never a shared production Redis in tests).
    ``prefix`` namespaces the keys. ``history``: messages kept per channel.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "fokha:ws",
        history: int = 1000,
        op_timeout: float = 5.0,
        max_channels: int = 100_000,
        logger: logging.Logger | None = None,
    ) -> None:
        self.max_channels = _validate.integer("max_channels", max_channels, minimum=1)
        self.url = _validate.string("url", url)
        self.prefix = _validate.string("prefix", prefix)
        self.history = _validate.integer("history", history, minimum=1)
        self.op_timeout = _validate.positive("op_timeout", op_timeout)
        self.log = logger or logging.getLogger("fokha_integration.ws.brokers.redis")
        self._redis: Any = None
        self._script: Any = None
        self._deliver: Deliver | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._last: dict[str, Position] = {}
        self._known: set[str] = set()  # channels published here or seen on the fan-out
        self._closed = False
        self.backfilled = 0

    def _keys(self, channel: str) -> list[str]:
        base = f"{self.prefix}:{{{channel}}}"
        return [f"{base}:seq", f"{base}:epoch", f"{base}:log", f"{base}:boot"]

    @property
    def _fanout(self) -> str:
        return f"{self.prefix}:fanout"

    async def start(self, deliver: Deliver) -> None:
        """Connect, subscribe to the fan-out channel and start delivering."""
        self._deliver = deliver
        self._redis = _redis.from_url(
            self.url, socket_timeout=self.op_timeout, socket_connect_timeout=self.op_timeout
        )
        self._script = self._redis.register_script(_PUBLISH)
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        try:
            await asyncio.wait_for(self._listening.wait(), self.op_timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise BackendUnavailableError("redis", "could not subscribe in time") from None

    async def publish(self, channel: str, data_json: str, ts: float) -> Position:
        """Number, store and publish atomically (one Lua script)."""
        if self._closed or self._script is None:
            raise ClosedError("broker is closed or not started")
        if channel not in self._known and len(self._known) >= self.max_channels:
            # A bound on channels, so clients allowed to publish cannot grow every
            # node's per-channel state (and Redis keys) without end. Each node refuses
            # new channels past the bound, so the total stays bounded too.
            raise ChannelLimitError(channel, self.max_channels)
        args = [new_epoch(), self.history, data_json, repr(ts), self._fanout, channel]
        with map_backend_errors("redis", "publish"):
            epoch, seq = await asyncio.wait_for(
                self._script(keys=self._keys(channel), args=args), self.op_timeout
            )
        self._known.add(channel)
        return Position(_text(epoch), int(seq))

    async def _read(
        self, channel: str, first: int, last: str = "+"
    ) -> tuple[str | None, list[Message]]:
        _, epoch_key, log_key, _ = self._keys(channel)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(epoch_key)
            pipe.xrange(log_key, f"{first}-0", last, count=self.history)
            epoch_raw, entries = await asyncio.wait_for(pipe.execute(), self.op_timeout)
        if epoch_raw is None:
            return None, []
        epoch = _text(epoch_raw)
        sent = time.time()
        out = []
        for entry_id, fields in entries:
            seq = int(_text(entry_id).split("-", 1)[0])
            out.append(
                make_message(
                    channel, epoch, seq, float(_text(fields[b"t"])), _text(fields[b"d"]), sent
                )
            )
        return epoch, out

    async def recover(self, channel: str, since: Position | None) -> Recovery:
        """Answer from the channel's stream (exact messages or a snapshot)."""
        _, epoch_key, log_key, _ = self._keys(channel)
        with map_backend_errors("redis", "recover"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(epoch_key)
                pipe.xrevrange(log_key, "+", "-", count=1)
                if since is not None:
                    pipe.xrange(log_key, f"{since.seq + 1}-0", "+", count=self.history)
                replies = await asyncio.wait_for(pipe.execute(), self.op_timeout)
        epoch_raw, newest = replies[0], replies[1]
        if epoch_raw is None or not newest:
            return recover_from(since, None, (), None)
        epoch = _text(epoch_raw)
        sent = time.time()

        def build(entry: Any) -> Message:
            entry_id, fields = entry
            seq = int(_text(entry_id).split("-", 1)[0])
            return make_message(
                channel, epoch, seq, float(_text(fields[b"t"])), _text(fields[b"d"]), sent
            )

        latest = build(newest[0])
        history = [build(e) for e in replies[2]] if since is not None else []
        return recover_from(since, epoch, history, latest)

    async def _listen(self) -> None:
        delay = 0.05
        while not self._closed:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._fanout)
                await self._backfill()
                self._listening.set()
                delay = 0.05
                while not self._closed:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        try:
                            await self._on_payload(msg["data"])
                        except (_RedisError, OSError):
                            raise
                        except Exception:
                            # One bad payload (or a bug downstream) must not make the
                            # node deaf: log it and keep listening.
                            self.log.exception("fan-out message could not be delivered")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Connection loss, a timed-out back-fill (asyncio.TimeoutError is no
                # OSError on 3.10) or a malformed stream entry: the listener must never
                # die silently, so every failure reconnects after a backoff.
                self.log.warning("redis fan-out interrupted (%r); reconnecting", exc)
                await asyncio.sleep(delay)  # backoff before reconnecting to Redis
                delay = min(2.0, delay * 2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _backfill(self) -> None:
        """Deliver what was published while our pub/sub connection was down."""
        for channel, pos in list(self._last.items()):
            epoch, missed = await self._read(channel, pos.seq + 1)
            if epoch is None:
                continue
            if epoch != pos.epoch:
                # The stream was reset meanwhile (e.g. Redis restarted): replay the new epoch.
                epoch, missed = await self._read(channel, 1)
            for msg in missed:
                self.backfilled += 1
                self._emit(msg)

    async def _on_payload(self, raw: bytes) -> None:
        parts = _text(raw).split("\n", 4)
        if len(parts) != 5:
            self.log.warning("malformed fan-out payload ignored")
            return
        channel, epoch, seq_text, ts_text, data_json = parts
        try:
            seq, ts = int(seq_text), float(ts_text)
        except ValueError:
            self.log.warning("malformed fan-out payload ignored")
            return
        last = self._last.get(channel)
        expected = None if last is None else (last.seq + 1 if last.epoch == epoch else 1)
        if expected is not None and seq > expected:
            # Pub/sub skipped some (a reconnect we did not notice, or a stream reset
            # while we were away): fill from the stream.
            with contextlib.suppress(_RedisError, OSError, asyncio.TimeoutError):
                _, missed = await self._read(channel, expected, f"{seq - 1}-1")
                for msg in missed:
                    self.backfilled += 1
                    self._emit(msg)
        self._emit(make_message(channel, epoch, seq, ts, data_json, time.time()))

    def _emit(self, msg: Message) -> None:
        last = self._last.get(msg.channel)
        if last is not None and last.epoch == msg.epoch and msg.seq <= last.seq:
            return
        self._last[msg.channel] = msg.position
        self._known.add(msg.channel)
        if self._deliver is not None:
            self._deliver(msg)

    async def close(self) -> None:
        """Stop listening and close the Redis connections."""
        self._closed = True
        await cancel_and_wait(self._listener)
        if self._redis is not None:
            await self._redis.aclose()
