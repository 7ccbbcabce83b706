"""Deprecated location of the Redis Streams outbox store: import it from
:mod:`fokha_integration.queue.redis` (every backend lives at ``<package>/redis.py``)."""

from .redis import RedisStreamsStore

__all__ = ["RedisStreamsStore"]
