"""The errors of :class:`~fokha_integration.http.ApiClient`, and the one place they are made.

::

    FokhaError
     └── ApiError                                   .method, .url
          ├── ApiConnectionError                    refused, reset, closed mid-body
          ├── ApiTimeoutError (also OperationTimeoutError, TimeoutError)
          ├── ApiDecodeError                        the body is not the JSON/model expected
          └── HttpStatusError                       .status, .problem, .body, .retry_after
               ├── IdempotencyConflictError         409: the key's first request still runs
               └── IdempotencyMismatchError         422: the key was used for another request

The client also raises the library's :class:`~fokha_integration.errors.CircuitOpenError`
(the host's breaker is open), :class:`~fokha_integration.errors.RateLimitedError`
(the host's limiter could not give a slot before the deadline) and
:class:`~fokha_integration.errors.RetryExhaustedError` (the next wait would pass the
call's deadline; ``last_exception`` says what failed). aiohttp's exceptions are
translated only in :func:`translate_client_error` (and its context-manager form
:func:`map_client_errors`); status codes only in :func:`status_error`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..errors import FokhaError, OperationTimeoutError

__all__ = [
    "ApiConnectionError",
    "ApiDecodeError",
    "ApiError",
    "ApiTimeoutError",
    "HttpStatusError",
    "IdempotencyConflictError",
    "IdempotencyMismatchError",
    "map_client_errors",
    "status_error",
    "translate_client_error",
]

MAX_ERROR_BODY = 64 * 1024
"""How much of an error response's body an :class:`HttpStatusError` keeps."""


class ApiError(FokhaError):
    """A call made by :class:`~fokha_integration.http.ApiClient` failed."""

    def __init__(self, method: str, url: str, message: str) -> None:
        self.method = method
        self.url = url
        super().__init__(f"{method} {url}: {message}")


class ApiConnectionError(ApiError):
    """The connection failed: refused, reset, or closed before the whole body arrived."""


class ApiTimeoutError(ApiError, OperationTimeoutError):
    """An attempt took longer than its timeout. Also a :class:`TimeoutError`."""

    def __init__(self, method: str, url: str, timeout: float) -> None:
        self.method = method
        self.url = url
        self.operation = f"{method} {url}"
        self.timeout = timeout
        Exception.__init__(self, f"{method} {url}: no complete answer within {timeout:g}s")


class ApiDecodeError(ApiError):
    """The response body is not what the caller asked to decode it into."""


class HttpStatusError(ApiError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``problem`` the RFC 9457 problem document when the
    body was ``application/problem+json`` (else ``None``), ``body`` the first
    64 KiB of the body, ``retry_after`` the seconds a ``Retry-After`` header asked
    for (``None`` without one), ``headers`` the response headers.
    """

    def __init__(
        self,
        method: str,
        url: str,
        status: int,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.body = body[:MAX_ERROR_BODY]
        self.headers = dict(headers or {})
        self.retry_after = retry_after
        self.problem = _problem_of(self.headers, self.body)
        title = self.problem.get("title") if self.problem else None
        super().__init__(method, url, f"HTTP {status}" + (f" ({title})" if title else ""))


class IdempotencyConflictError(HttpStatusError):
    """409 for a request with an ``Idempotency-Key``: the first request with it still runs."""


class IdempotencyMismatchError(HttpStatusError):
    """422 for a request with an ``Idempotency-Key``: the key was used for another request.

    Never retried: the caller reused a key for a different operation.
    """


def _problem_of(headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if not content_type.startswith("application/problem+json"):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def status_error(
    method: str,
    url: str,
    status: int,
    *,
    body: bytes,
    headers: Mapping[str, str],
    retry_after: float | None,
    has_key: bool,
) -> HttpStatusError:
    """The typed error for an error status (the only place statuses become errors)."""
    kind: type[HttpStatusError] = HttpStatusError
    if has_key and status == 409:
        kind = IdempotencyConflictError
    elif has_key and status == 422:
        kind = IdempotencyMismatchError
    return kind(method, url, status, body=body, headers=headers, retry_after=retry_after)


def translate_client_error(
    exc: BaseException, method: str, url: object, timeout: float
) -> BaseException:
    """The library error for an aiohttp/asyncio exception (the only place they are mapped).

    Connection-level failures become :class:`ApiConnectionError`, timeouts
    :class:`ApiTimeoutError`; anything else (cancellation, the library's own errors)
    is returned unchanged. Raise the result ``from exc``.
    """
    import aiohttp

    if isinstance(exc, FokhaError):
        return exc
    # Our own error raised inside a middleware may come back wrapped: a TimeoutError is
    # an OSError, and aiohttp turns an OSError into ClientOSError (on Python 3.10, where
    # asyncio.TimeoutError is not TimeoutError, ours takes that path).
    cause = exc.__cause__
    if isinstance(exc, aiohttp.ClientOSError) and isinstance(cause, FokhaError):
        return cause
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's timeouts derive from it too
        return ApiTimeoutError(method, str(url), timeout)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return ApiConnectionError(method, str(url), f"{type(exc).__name__}: {exc}")
    return exc


@contextmanager
def map_client_errors(method: str, url: object, timeout: float) -> Iterator[None]:
    """:func:`translate_client_error` for the exceptions raised in the block."""
    try:
        yield
    except Exception as exc:
        mapped = translate_client_error(exc, method, url, timeout)
        if mapped is exc:
            raise
        raise mapped from (None if mapped is exc.__cause__ else exc)
