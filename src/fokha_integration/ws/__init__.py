"""WebSocket streaming: a channel server with recovery and slow-client handling, and a client.

* :class:`WebSocketServer` - channels, per-channel sequence + epoch, latest value on
  subscribe, exact recovery from a bounded history, conflation / gap markers for
  slow clients, auth and limits, brokers for scale-out.
* :class:`WebSocketClient` - reconnect with full-jitter backoff, resubscribe with
  ``since``, gap detection, heartbeat watchdog, typed messages.
* The protocol (``docs/protocols/websocket.md``) lives in the sans-I/O
  :class:`Session`; brokers in :mod:`fokha_integration.ws.brokers`.
"""

from __future__ import annotations

from ._auth import (
    Authenticator,
    AuthError,
    Authorizer,
    Principal,
    TokenAuthenticator,
    token_channels,
)
from ._channels import ChannelLimitError, ChannelLog, HistoryPolicy, Message, Recovery
from ._client import ChannelMessage, ClientState, StateEvent, WebSocketClient
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
from ._server import SlowClientPolicy, WebSocketMetrics, WebSocketServer
from .brokers import Broker, LocalBroker

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
