"""FileBridge: crash-safe file messaging with a MetaTrader 5 EA (protocol v1).

- :class:`FileBridge` (asyncio) and :class:`~.sync.SyncFileBridge` (blocking);
- the sans-I/O frame codec (:func:`encode_frame`, :func:`decode_frame`);
- MT5 data-folder discovery (:mod:`.discovery`);
- the MQL5 side as package data: ``mql5/FokhaBridge.mqh`` and
  ``mql5/FokhaBridgeExample.mq5`` (see :func:`mql5_files`).

The wire contract is ``docs/protocols/file-bridge.md``.
"""

from __future__ import annotations

from pathlib import Path

from ._bridge import (
    BridgeStats,
    FileBridge,
    Handler,
    Message,
    PollConfig,
    Reply,
    ReplyStatus,
    Snapshot,
)
from ._folders import Durability
from ._frame import (
    CorruptFrameError,
    Frame,
    IncompleteFrameError,
    decode_frame,
    encode_frame,
)
from .discovery import MT5DataFolder, common_files_folders, find_mt5_data_folders
from .sync import SyncFileBridge

__all__ = [
    "BridgeStats",
    "CorruptFrameError",
    "Durability",
    "FileBridge",
    "Frame",
    "Handler",
    "IncompleteFrameError",
    "MT5DataFolder",
    "Message",
    "PollConfig",
    "Reply",
    "ReplyStatus",
    "Snapshot",
    "SyncFileBridge",
    "common_files_folders",
    "decode_frame",
    "encode_frame",
    "find_mt5_data_folders",
    "mql5_files",
]


def mql5_files() -> list[Path]:
    """The shipped MQL5 sources (include file and example EA), to copy into a terminal."""
    folder = Path(__file__).resolve().parent / "mql5"
    return sorted(p for p in folder.iterdir() if p.suffix in (".mqh", ".mq5"))
