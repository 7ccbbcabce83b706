"""The settings validators refuse NaN, infinities, bools and wrong types with ConfigError."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fokha_integration import _validate as v
from fokha_integration.errors import ConfigError, FokhaError


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "1", None, 10**400])
def test_number_refuses_non_finite_and_wrong_types(bad: object) -> None:
    """number() refuses NaN, infinities, bools, strings, None and ints too big for a float."""
    with pytest.raises(ConfigError) as info:
        v.number("timeout", bad)
    assert info.value.field == "timeout"
    assert isinstance(info.value, FokhaError)


def test_bounds_named_in_message() -> None:
    """Out-of-range values name the bound."""
    with pytest.raises(ConfigError, match="> 0"):
        v.positive("rate", 0)
    with pytest.raises(ConfigError, match=">= 0"):
        v.non_negative("jitter", -0.1)
    with pytest.raises(ConfigError, match="<= 5"):
        v.integer("attempts", 6, maximum=5)


@pytest.mark.parametrize("bad", [1.5, 2.0, True, "3", math.nan])
def test_integer_refuses_floats_and_bools(bad: object) -> None:
    """integer() refuses floats (even 2.0), bools and strings."""
    with pytest.raises(ConfigError):
        v.integer("attempts", bad, minimum=1)


def test_small_helpers() -> None:
    """boolean, string, one_of and optional_number accept good values and refuse bad ones."""
    assert v.boolean("on", True) is True
    with pytest.raises(ConfigError):
        v.boolean("on", 1)
    assert v.string("name", "x") == "x"
    with pytest.raises(ConfigError):
        v.string("name", "")
    with pytest.raises(ConfigError):
        v.string("name", "abc", max_length=2)
    assert v.one_of("mode", "open", ("open", "closed")) == "open"
    with pytest.raises(ConfigError, match="'open', 'closed'"):
        v.one_of("mode", "shut", ("open", "closed"))
    assert v.optional_number("limit", None) is None
    assert v.optional_number("limit", 3) == 3.0


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_number_accepts_exactly_the_finite_floats(x: float) -> None:
    """Every finite float passes unchanged; every non-finite one is refused."""
    if math.isfinite(x):
        assert v.number("x", x) == x
    else:
        with pytest.raises(ConfigError):
            v.number("x", x)
