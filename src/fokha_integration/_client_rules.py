"""The client-side rules of protocol v1, as data: one table for every client we ship.

The Python :class:`~fokha_integration.ws.WebSocketClient` and the generated Dart
client (``fokha dart generate``) both take their reconnect, recovery and refresh
behaviour from :data:`CLIENT_RULES`; a test checks the Python client's defaults
against it and the Dart generator writes its constants from it, so the two cannot
drift. The REST client's retry rules are here too.

Plain data, no imports beyond the standard library: cheap to import anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CLIENT_RULES", "ClientRules"]


@dataclass(frozen=True, slots=True)
class ClientRules:
    """How a client of our protocols reconnects, recovers and retries.

    Reconnect delays are "full jitter" (AWS architecture blog, 2015): attempt ``n``
    (0-based) sleeps a uniform random time in ``[0, min(cap, initial * 2**n)]``,
    and never less than a server-given ``retry_after``. The attempt counter resets
    once a connection has stayed up for ``healthy_after`` seconds.
    """

    reconnect_initial: float = field(
        default=0.5, metadata={"doc": "First reconnect delay bound, seconds."}
    )
    reconnect_cap: float = field(
        default=20.0, metadata={"doc": "Largest reconnect delay bound, seconds."}
    )
    reconnect_multiplier: float = field(
        default=2.0, metadata={"doc": "Growth of the delay bound per failed attempt."}
    )
    healthy_after: float = field(
        default=10.0,
        metadata={"doc": "A connection up this long resets the attempt counter, seconds."},
    )
    heartbeat_misses: float = field(
        default=3.0,
        metadata={
            "doc": "No frame for this many heartbeat intervals means the connection is dead."
        },
    )
    request_timeout: float = field(
        default=10.0, metadata={"doc": "How long a hello/subscribe waits for its reply, seconds."}
    )
    token_refresh_timeout: float = field(
        default=10.0,
        metadata={
            "doc": "How long one token refresh may take before it counts as failed, seconds."
        },
    )
    offline_queue_limit: int = field(
        default=256,
        metadata={
            "doc": "Commands kept while offline; past this the oldest is dropped (and reported)."
        },
    )
    retry_attempts: int = field(
        default=4,
        metadata={
            "doc": "REST calls: attempts in all (first try included) for a retryable request."
        },
    )
    retry_initial: float = field(
        default=0.2,
        metadata={
            "doc": "REST calls: first retry delay bound, seconds (full jitter, doubled per try)."
        },
    )
    retry_cap: float = field(
        default=5.0, metadata={"doc": "REST calls: largest retry delay bound, seconds."}
    )
    retry_after_cap: float = field(
        default=60.0,
        metadata={"doc": "REST calls: a server's Retry-After longer than this is not waited for."},
    )
    retry_statuses: tuple[int, ...] = field(
        default=(408, 425, 429, 500, 502, 503, 504),
        metadata={"doc": "REST calls: statuses that may be retried (for safe requests only)."},
    )
    idempotent_methods: tuple[str, ...] = field(
        default=("GET", "HEAD", "PUT", "DELETE", "OPTIONS"),
        metadata={"doc": "REST calls: methods retried without an Idempotency-Key."},
    )

    def reconnect_bound(self, attempt: int) -> float:
        """The upper bound of the jittered delay before reconnect attempt ``attempt``."""
        exponent = min(attempt, 64)  # 2**64 is far past any cap; avoids overflow
        return float(
            min(self.reconnect_cap, self.reconnect_initial * self.reconnect_multiplier**exponent)
        )


CLIENT_RULES = ClientRules()
"""The rules every client we ship follows."""
