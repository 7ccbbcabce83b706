"""Checks for settings: the one place a constructor argument is validated.

Every public constructor and config object checks its arguments with these
functions, so a bad setting fails the same way everywhere: a
:class:`~fokha_integration.errors.ConfigError` whose ``field`` names the setting,
raised when the object is built, never later in the middle of a delivery.

What they refuse, on purpose:

- ``bool`` where a number is expected (``True`` is an ``int`` to Python, but
  ``attempts=True`` is a mistake, not ``1``);
- NaN and infinities (``nan`` compares false with everything, so a NaN timeout
  never fires and a NaN duration never ends);
- floats where a count is expected (``attempts=1.5``);
- out-of-range values, with the range in the message.

Not for validating data from outside (frames, requests, files): those have their
own error replies (``ProtocolError``, ``ValidationError`` on models).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = [
    "boolean",
    "integer",
    "non_negative",
    "number",
    "one_of",
    "optional_number",
    "positive",
    "string",
]

T = TypeVar("T")


def number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
) -> float:
    """A finite real number within the given bounds, as a ``float``.

    ``int`` is accepted (and converted); ``bool``, strings, NaN and infinities
    are refused with a :class:`ConfigError` naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, "must be a number", value)
    try:
        result = float(value)
    except OverflowError:
        raise ConfigError(name, "must be a finite number", value) from None
    if not math.isfinite(result):
        raise ConfigError(name, "must be a finite number", value)
    if exclusive_minimum is not None and not result > exclusive_minimum:
        raise ConfigError(name, f"must be > {exclusive_minimum:g}", value)
    if minimum is not None and result < minimum:
        raise ConfigError(name, f"must be >= {minimum:g}", value)
    if maximum is not None and result > maximum:
        raise ConfigError(name, f"must be <= {maximum:g}", value)
    return result


def optional_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
) -> float | None:
    """Like :func:`number`, but ``None`` passes through (meaning "no limit", "off", ...)."""
    if value is None:
        return None
    return number(
        name, value, minimum=minimum, maximum=maximum, exclusive_minimum=exclusive_minimum
    )


def positive(name: str, value: Any, *, maximum: float | None = None) -> float:
    """A finite number > 0 (durations, rates, intervals)."""
    return number(name, value, exclusive_minimum=0.0, maximum=maximum)


def non_negative(name: str, value: Any, *, maximum: float | None = None) -> float:
    """A finite number >= 0 (delays, jitter, grace periods)."""
    return number(name, value, minimum=0.0, maximum=maximum)


def integer(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An ``int`` within the given bounds; ``bool`` and floats (even ``2.0``) are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, "must be an integer", value)
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be >= {minimum}", value)
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be <= {maximum}", value)
    return value


def boolean(name: str, value: Any) -> bool:
    """A real ``bool`` (``1`` or ``"yes"`` are refused: a typo should not switch a feature)."""
    if not isinstance(value, bool):
        raise ConfigError(name, "must be True or False", value)
    return value


def string(name: str, value: Any, *, non_empty: bool = True, max_length: int | None = None) -> str:
    """A ``str``, non-empty unless ``non_empty=False``, at most ``max_length`` characters."""
    if not isinstance(value, str):
        raise ConfigError(name, "must be a string", value)
    if non_empty and not value:
        raise ConfigError(name, "must not be empty", value)
    if max_length is not None and len(value) > max_length:
        raise ConfigError(name, f"must be at most {max_length} characters", value)
    return value


def one_of(name: str, value: T, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices``; the message lists them."""
    if isinstance(value, bool) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(name, f"must be one of {listed}", value)
    return value
