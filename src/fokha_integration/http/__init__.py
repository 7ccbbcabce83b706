"""The HTTP layer: webhooks in and out, an idempotent server side, a careful client.

- :func:`verify_webhook`, :func:`sign_webhook`, :func:`webhook_headers`,
  :func:`generate_webhook_secret`: Standard Webhooks signing (no I/O).
- :func:`webhook_receiver`: an aiohttp handler that verifies, keeps a replay cache
  and calls yours once per message id.
- :func:`idempotency_middleware`: ``Idempotency-Key`` for aiohttp servers
  (draft-ietf-httpapi-idempotency-key-header-07 with Stripe's rules).
- :class:`ApiClient`: an outbound client that retries only what is safe to retry.
- :func:`api_app`: the REST API the Flutter app talks to, with its OpenAPI document.

Everything but the webhook signing functions is imported on first use (the
aiohttp-based modules load only when one of their names is touched).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .webhooks import (
    MIN_SECRET_BYTES,
    WebhookSecret,
    WebhookVerificationError,
    generate_webhook_secret,
    sign_webhook,
    verify_webhook,
    webhook_headers,
)

if TYPE_CHECKING:
    from ._errors import (
        ApiConnectionError,
        ApiDecodeError,
        ApiError,
        ApiTimeoutError,
        HttpStatusError,
        IdempotencyConflictError,
        IdempotencyMismatchError,
    )
    from .app import ApiAppConfig, SnapshotSource, api_app
    from .client import ApiClient, ApiClientConfig, ApiHostStats, ApiResponse
    from .idempotency import (
        IdempotencyConfig,
        StoredResponse,
        idempotency_middleware,
        idempotent,
    )
    from .openapi import openapi_document
    from .receiver import (
        WebhookEvent,
        WebhookReceiver,
        WebhookReceiverConfig,
        WebhookReceiverStats,
        webhook_receiver,
    )

_LAZY = {
    "ApiAppConfig": ".app",
    "SnapshotSource": ".app",
    "api_app": ".app",
    "openapi_document": ".openapi",
    "ApiConnectionError": "._errors",
    "ApiDecodeError": "._errors",
    "ApiError": "._errors",
    "ApiTimeoutError": "._errors",
    "HttpStatusError": "._errors",
    "IdempotencyConflictError": "._errors",
    "IdempotencyMismatchError": "._errors",
    "ApiClient": ".client",
    "ApiClientConfig": ".client",
    "ApiHostStats": ".client",
    "ApiResponse": ".client",
    "IdempotencyConfig": ".idempotency",
    "StoredResponse": ".idempotency",
    "idempotency_middleware": ".idempotency",
    "idempotent": ".idempotency",
    "WebhookEvent": ".receiver",
    "WebhookReceiver": ".receiver",
    "WebhookReceiverConfig": ".receiver",
    "WebhookReceiverStats": ".receiver",
    "webhook_receiver": ".receiver",
}

__all__ = [
    "MIN_SECRET_BYTES",
    "ApiAppConfig",
    "ApiClient",
    "ApiClientConfig",
    "ApiConnectionError",
    "ApiDecodeError",
    "ApiError",
    "ApiHostStats",
    "ApiResponse",
    "ApiTimeoutError",
    "HttpStatusError",
    "IdempotencyConfig",
    "IdempotencyConflictError",
    "IdempotencyMismatchError",
    "SnapshotSource",
    "StoredResponse",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookReceiverConfig",
    "WebhookReceiverStats",
    "WebhookSecret",
    "WebhookVerificationError",
    "api_app",
    "generate_webhook_secret",
    "idempotency_middleware",
    "idempotent",
    "openapi_document",
    "sign_webhook",
    "verify_webhook",
    "webhook_headers",
    "webhook_receiver",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
