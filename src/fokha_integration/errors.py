"""One exception tree for the whole library.

Every exception the library raises on purpose derives from :class:`FokhaError`,
so ``except FokhaError`` catches all of them, and each subtree can be caught on its
own. Exceptions carry structured attributes; their messages are for humans, the
attributes are for code.

::

    FokhaError
     ├── ValidationError (also ValueError)        .field, .value, .reason
     │    └── ConfigError                          bad configuration (keyword or file)
     ├── ProtocolError                             .code, .detail
     │    └── FrameError                           a wire frame failed its checks
     ├── BackendError                              .backend
     │    └── BackendUnavailableError              the backend cannot be reached
     ├── CircuitOpenError                          .name, .state, .retry_after
     ├── RateLimitedError                          .retry_after
     ├── OperationTimeoutError (also TimeoutError) .operation, .timeout
     ├── RetryExhaustedError                       .attempts, .elapsed, .last_exception
     └── ClosedError                               the component was closed

Backend errors (sqlite3, redis-py, OS errors) are translated into this tree in one
helper per backend, with ``raise ... from exc`` so the original stays attached.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "CircuitOpenError",
    "ClosedError",
    "ConfigError",
    "FokhaError",
    "FrameError",
    "OperationTimeoutError",
    "ProtocolError",
    "RateLimitedError",
    "RetryExhaustedError",
    "ValidationError",
]


class FokhaError(Exception):
    """The root of every exception this library raises on purpose."""


class ValidationError(FokhaError, ValueError):
    """A value failed validation.

    ``field`` names the offending field (dotted for nested values, e.g.
    ``"signal.stop_loss"``), ``value`` is what was given and ``reason`` says what
    was expected.
    """

    def __init__(self, field: str, reason: str, value: Any = None) -> None:
        self.field = field
        self.reason = reason
        self.value = value
        super().__init__(f"{field}: {reason} (got {value!r})")


class ConfigError(ValidationError):
    """A configuration value (a keyword argument or a config file entry) is invalid."""


class ProtocolError(FokhaError):
    """A peer sent something the protocol does not allow.

    ``code`` is a short stable machine-readable string (``"bad_json"``,
    ``"unknown_op"``, ...), ``detail`` a human explanation.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)


class FrameError(ProtocolError):
    """A wire frame failed its self-checks (magic, version, length, checksum, encoding)."""


class BackendError(FokhaError):
    """A storage or transport backend failed; ``backend`` names it (``"redis"``, ...)."""

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        super().__init__(f"[{backend}] {message}")


class BackendUnavailableError(BackendError):
    """The backend cannot be reached right now (connection refused, timed out, ...).

    Components that can fail open or closed raise this in ``closed`` mode.
    """


class CircuitOpenError(FokhaError):
    """A circuit breaker refused the call.

    ``name`` is the breaker's name, ``state`` its state name (``"open"``,
    ``"half_open"`` when all probe slots are taken, ``"forced_open"``) and
    ``retry_after`` the seconds until it may let a call through (``None`` when
    unknown, e.g. forced open). Retry policies never retry this error.
    """

    def __init__(self, name: str, state: str, retry_after: float | None) -> None:
        self.name = name
        self.state = state
        self.retry_after = retry_after
        hint = f"; retry after {retry_after:.3f}s" if retry_after is not None else ""
        super().__init__(f"circuit {name!r} is {state}{hint}")


class RateLimitedError(FokhaError):
    """A rate limiter (ours or a peer's) refused; ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class OperationTimeoutError(FokhaError, TimeoutError):
    """An operation did not finish within its timeout.

    Also a :class:`TimeoutError`, so ``except TimeoutError`` keeps working.
    """

    def __init__(self, operation: str, timeout: float) -> None:
        self.operation = operation
        self.timeout = timeout
        super().__init__(f"{operation} timed out after {timeout:g}s")


class RetryExhaustedError(FokhaError):
    """A retry policy gave up because its deadline would be passed.

    Raised only when the *deadline* stops the retries; when the attempts run out the
    last exception itself is re-raised. ``last_exception`` is also the ``__cause__``.
    """

    def __init__(self, attempts: int, elapsed: float, last_exception: BaseException) -> None:
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_exception = last_exception
        super().__init__(
            f"gave up after {attempts} attempt(s) in {elapsed:.3f}s: {last_exception!r}"
        )


class ClosedError(FokhaError):
    """The component was closed; no more operations are accepted."""
