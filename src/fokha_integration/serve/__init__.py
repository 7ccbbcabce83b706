"""``fokha serve``: the integration hub from one config file, with a web console.

:class:`Hub` runs what a :class:`ServeConfig` names in one asyncio process;
:func:`load_config` reads and validates ``fokha.toml`` (errors name the file,
line and key). The console's static assets are package data.
"""

from __future__ import annotations

from ._config import ServeConfig, ServeConfigError, load_config, parse_config, schema_reference
from ._hub import Hub, HubAlreadyRunningError

__all__ = [
    "Hub",
    "HubAlreadyRunningError",
    "ServeConfig",
    "ServeConfigError",
    "load_config",
    "parse_config",
    "schema_reference",
]
