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

Backend errors (sqlite3, redis-py, PostgreSQL drivers, OS errors) are translated
into this tree in one place: :func:`map_backend_errors` (a context manager, after
httpcore's ``map_exceptions``) and :func:`translate_backend_error`, with one
classification table per driver in ``fokha_integration._driver_errors``. The
original stays attached as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    "map_backend_errors",
    "translate_backend_error",
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


def translate_backend_error(backend: str, exc: BaseException, operation: str = "") -> BaseException:
    """The library error for a driver's exception, or ``exc`` itself if it is not one.

    ``backend`` names the driver's table (``"sqlite"``, ``"redis"``, ``"postgres"``,
    ``"os"``); the table says whether the error means "cannot be reached right now"
    (:class:`BackendUnavailableError`: retry later, fail open or closed) or "the
    request itself failed" (:class:`BackendError`). Library errors and exceptions
    the table does not know (a bug in our code, ``CancelledError``) pass through
    unchanged.
    """
    if isinstance(exc, FokhaError):
        return exc
    from ._driver_errors import classify  # lazily: keeps driver tables off the import path

    kind = classify(backend, exc)
    if kind is None:
        return exc
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if operation:
        detail = f"{operation}: {detail}"
    if kind == "unavailable":
        return BackendUnavailableError(backend, detail)
    return BackendError(backend, detail)


@contextmanager
def map_backend_errors(backend: str, operation: str = "") -> Iterator[None]:
    """Translate a driver's exceptions raised in the block into the library's tree.

    ::

        with map_backend_errors("redis", "claim"):
            await client.evalsha(...)

    The translated error is raised ``from`` the original.
    """
    try:
        yield
    except Exception as exc:
        mapped = translate_backend_error(backend, exc, operation)
        if mapped is exc:
            raise
        raise mapped from exc
