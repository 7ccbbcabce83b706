"""Fixtures for the hub: a started Hub on free ports in a temp dir, and a real headless Chromium.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it) and is
driven by Playwright with ``executable_path`` (no browser download). Without it
the browser tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.serve import Hub, ServeConfig
from fokha_integration.serve._config import (
    BridgeSection,
    HealthSection,
    ServerSection,
    SinkSection,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "docs" / "images"

HubFactory = Callable[..., Awaitable[Hub]]


def make_config(state: Path, **overrides: Any) -> ServeConfig:
    """A hub config on free ports with the EA emulator; keyword overrides replace sections."""
    sections: dict[str, Any] = {
        "server": ServerSection(http_port=0, ws_port=0, state_dir=str(state), secret="s" * 32),
        "bridge": BridgeSection(path="emulator", fail_after=1.0),
        "health": HealthSection(interval=0.2),
        "sinks": (SinkSection(kind="websocket", name="app"), SinkSection(kind="bridge", name="ea")),
    }
    sections.update(overrides)
    return ServeConfig(**sections)


@pytest.fixture
async def hub_factory(tmp_path: Path) -> AsyncIterator[HubFactory]:
    """Starts hubs (stopped at the end of the test)."""
    hubs: list[Hub] = []

    async def start(config: ServeConfig | None = None, *, demo: bool = False) -> Hub:
        hub = Hub(config or make_config(tmp_path / "state"), demo=demo)
        await hub.start()
        hubs.append(hub)
        return hub

    yield start
    for hub in reversed(hubs):
        if hub.ws is not None and hub.ws.serving:
            await hub.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A real headless Chromium (Debian's), one per test."""
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run should have installed it")
        pytest.skip("no chromium binary on PATH")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield launched
        finally:
            await launched.close()
