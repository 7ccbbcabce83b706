"""HTTP helpers: Standard Webhooks signing and verification.

Signing is used by :class:`~fokha_integration.queue.WebhookSink`; verification is
for receivers (n8n code nodes, your own aiohttp handlers, tests).
"""

from .webhooks import (
    WebhookVerificationError,
    generate_webhook_secret,
    sign_webhook,
    verify_webhook,
    webhook_headers,
)

__all__ = [
    "WebhookVerificationError",
    "generate_webhook_secret",
    "sign_webhook",
    "verify_webhook",
    "webhook_headers",
]
