"""WebSocket streaming: a channel server with recovery and slow-client handling, and a client.

* :class:`WebSocketServer` - channels, per-channel sequence + epoch, latest value on
  subscribe, exact recovery from a bounded history, conflation / gap markers for
  slow clients, auth and limits, brokers for scale-out.
* :class:`WebSocketClient` - reconnect with full-jitter backoff, resubscribe with
  ``since``, gap detection, heartbeat watchdog, typed messages.
* The protocol (``docs/protocols/websocket.md``) lives in the sans-I/O
  :class:`Session`; brokers in :mod:`fokha_integration.ws.brokers`; the protocol
  as plain data in :mod:`fokha_integration.ws.protocol_table`.

The server and client (which need ``websockets``) are imported on first use
(PEP 562), so the protocol core, auth and table load without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._auth import (
    Authenticator,
    AuthError,
    Authorizer,
    Principal,
    TokenAuthenticator,
    token_channels,
)
from ._channels import ChannelLimitError, ChannelLog, HistoryPolicy, Message, Recovery
from ._protocol import (
    PROTOCOL_VERSION,
    CloseCode,
    ErrorCode,
    Limits,
    Mode,
    Position,
    Session,
    is_reconnect_code,
    validate_channel,
)
from .brokers import Broker, LocalBroker

if TYPE_CHECKING:
    from ._client import ChannelMessage, ClientState, StateEvent, WebSocketClient
    from ._fanout import SlowClientPolicy
    from ._server import WebSocketMetrics, WebSocketServer

_LAZY = {
    "ChannelMessage": "._client",
    "ClientState": "._client",
    "StateEvent": "._client",
    "WebSocketClient": "._client",
    "SlowClientPolicy": "._fanout",
    "WebSocketMetrics": "._server",
    "WebSocketServer": "._server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "PROTOCOL_VERSION",
    "AuthError",
    "Authenticator",
    "Authorizer",
    "Broker",
    "ChannelLimitError",
    "ChannelLog",
    "ChannelMessage",
    "ClientState",
    "CloseCode",
    "ErrorCode",
    "HistoryPolicy",
    "Limits",
    "LocalBroker",
    "Message",
    "Mode",
    "Position",
    "Principal",
    "Recovery",
    "Session",
    "SlowClientPolicy",
    "StateEvent",
    "TokenAuthenticator",
    "WebSocketClient",
    "WebSocketMetrics",
    "WebSocketServer",
    "is_reconnect_code",
    "token_channels",
    "validate_channel",
]


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
