"""DedupCache policy: configuration, stats, the public exports."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fokha_integration
from fokha_integration import ConfigError, ManualClock
from fokha_integration.dedup import ClaimResult, ClaimStatus, DedupCache, DedupStats


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fail_mode": "maybe"},
        {"ttl_by_type": {"signal": 0}},
        {"ttl_by_type": {"bad name": 5}},
        {"ttl_by_type": [("signal", 5)]},
        {"default_ttl": -1},
        {"default_ttl": True},
        {"max_result_bytes": 0},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object]) -> None:
    """Invalid fail modes, TTLs and limits raise ConfigError at construction."""
    with pytest.raises(ConfigError):
        DedupCache(**kwargs)  # type: ignore[arg-type]


async def test_unknown_type_uses_the_default_ttl() -> None:
    """A type not in ttl_by_type gets default_ttl."""
    clock = ManualClock()
    cache = DedupCache(clock=clock, ttl_by_type={"signal": 5}, default_ttl=2)
    first = await cache.claim("k", type="alert")
    assert first.expires_at == pytest.approx(first.first_seen + 2)
    clock.advance(2)
    assert (await cache.claim("k", type="alert")).status is ClaimStatus.FIRST


async def test_stats_count_every_answer() -> None:
    """stats() counts first, duplicates, conflicts and in-flight answers."""
    cache = DedupCache(clock=ManualClock())
    await cache.claim("a", fingerprint="1")
    await cache.claim("a", fingerprint="1")
    await cache.claim("a", fingerprint="2")
    await cache.claim("b", lease=10)
    await cache.claim("b")
    await cache.claim_many(["a", "c"])
    assert cache.stats() == DedupStats(first=3, duplicates=2, conflicts=1, in_flight=1)


def test_claim_result_is_immutable() -> None:
    """A ClaimResult cannot be changed after the fact."""
    result = ClaimResult(ClaimStatus.FIRST, "k", 1.0)
    with pytest.raises(AttributeError):
        result.status = ClaimStatus.DUPLICATE  # type: ignore[misc]
    assert result.is_first


def test_top_level_exports() -> None:
    """The package root exports the dedup names, but not the Redis backend."""
    for name in (
        "ClaimResult",
        "ClaimStatus",
        "DedupCache",
        "DedupStats",
        "MemoryDedupBackend",
        "SQLiteDedupBackend",
        "content_key",
        "signal_key",
    ):
        assert name in fokha_integration.__all__
    assert "RedisDedupBackend" not in fokha_integration.__all__
    from fokha_integration import dedup

    assert dedup.RedisDedupBackend.__name__ == "RedisDedupBackend"  # lazy attribute


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_package_root_does_not_import_redis() -> None:
    """Importing fokha_integration (and its dedup package) never imports redis-py."""
    done = _python(
        "import sys, fokha_integration, fokha_integration.dedup; print('redis' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_missing_redis_extra_names_the_extra() -> None:
    """Without redis-py, importing the Redis backend says which extra to install."""
    done = _python("import sys; sys.modules['redis'] = None; import fokha_integration.dedup.redis")
    assert done.returncode != 0
    assert "pip install 'fokha-integration[redis]'" in done.stderr
