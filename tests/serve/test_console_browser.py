"""The web console in a real headless Chromium: login, live feed, EA tile, replay, resume.

Each state is saved as a screenshot under docs/images/ (used by docs/serve.md).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from fokha_integration.http import generate_webhook_secret
from fokha_integration.serve._config import ServerSection, SinkSection, SyncSection
from tests.support import free_port, timeout

from .conftest import ARTIFACTS, HubFactory, make_config


async def _login(browser: Any, hub: Any) -> Any:
    page = await browser.new_page(viewport={"width": 1100, "height": 900})
    await page.goto(f"http://127.0.0.1:{hub.http_port}/console")
    await page.fill("#token", hub.console_token())
    await page.click("#login-button")
    await page.wait_for_selector("#app:not([hidden])", timeout=timeout(10) * 1000)
    await page.wait_for_selector("#feed-state[data-status=pass]", timeout=timeout(10) * 1000)
    return page


async def _post_signal(hub: Any, symbol: str = "EURUSD") -> str:
    """Publish through the REST API, as the Flutter app does (an Idempotency-Key per call)."""
    url = f"http://127.0.0.1:{hub.http_port}/v1/signals"
    headers = {
        "Authorization": f"Bearer {hub.console_token()}",
        "Idempotency-Key": secrets.token_hex(16),
    }
    body = {"symbol": symbol, "direction": "BUY", "volume": 0.1}
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        assert r.status == 201, await r.text()
        data = await r.json()
        return str(data["id"])


async def test_login_refuses_a_bad_token_and_accepts_a_good_one(
    browser: Any, hub_factory: HubFactory
) -> None:
    """A forged token shows an error; the hub's token opens the console."""
    hub = await hub_factory()
    page = await browser.new_page(viewport={"width": 1100, "height": 900})
    await page.goto(f"http://127.0.0.1:{hub.http_port}/console")
    await page.fill("#token", "v1.forged.token")
    await page.click("#login-button")
    await page.wait_for_selector("#login-error:not([hidden])", timeout=timeout(10) * 1000)
    assert await page.is_hidden("#app")
    await page.screenshot(path=str(ARTIFACTS / "console-login.png"))
    await page.fill("#token", hub.console_token())
    await page.click("#login-button")
    await page.wait_for_selector("#tiles .tile", timeout=timeout(10) * 1000)
    await page.wait_for_selector("#feed-state[data-status=pass]", timeout=timeout(10) * 1000)


async def test_published_signal_appears_in_the_feed_within_1s(
    browser: Any, hub_factory: HubFactory
) -> None:
    """A signal accepted by the API is in the live feed within one second."""
    hub = await hub_factory()
    page = await _login(browser, hub)
    loop = asyncio.get_running_loop()
    started = loop.time()
    signal_id = await _post_signal(hub)
    await page.wait_for_selector(f'#feed li[data-id="{signal_id}"]', timeout=timeout(5) * 1000)
    assert loop.time() - started <= timeout(1.0)
    delivered = '#sinks tr[data-sink=ea] td:nth-child(2):text-is("1")'
    await page.wait_for_selector(delivered, timeout=timeout(5) * 1000)
    await page.screenshot(path=str(ARTIFACTS / "console-overview.png"))


async def test_ea_tile_fails_when_the_emulator_stops_and_recovers(
    browser: Any, hub_factory: HubFactory
) -> None:
    """Stopping the EA turns its tile red within fail_after (+ a check); a restart, green."""
    hub = await hub_factory()
    page = await _login(browser, hub)
    tile = "#tile-ea_status"
    await page.wait_for_selector(f"{tile}[data-status=pass]", timeout=timeout(10) * 1000)
    await hub.stop_emulator()
    # fail_after 1 s, checks every 0.2 s, the page polls every second.
    await page.wait_for_selector(f"{tile}[data-status=fail]", timeout=timeout(4) * 1000)
    await page.screenshot(path=str(ARTIFACTS / "console-ea-down.png"))
    await hub.start_emulator()
    await page.wait_for_selector(f"{tile}[data-status=pass]", timeout=timeout(6) * 1000)


async def test_dead_letter_replayed_from_the_console_is_delivered(
    browser: Any, hub_factory: HubFactory, tmp_path: Path
) -> None:
    """A failed webhook goes to dead letters; once the receiver recovers, Replay delivers it."""
    received: list[str] = []
    healthy = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        if not healthy.is_set():
            return web.Response(status=500)
        body = await request.json()
        received.append(str(body["id"]))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        config = make_config(
            tmp_path / "state",
            sinks=(
                SinkSection(
                    kind="webhook",
                    name="n8n",
                    url=f"http://127.0.0.1:{port}/hook",
                    secret=generate_webhook_secret(),
                    attempts=1,
                ),
            ),
        )
        hub = await hub_factory(config)
        page = await _login(browser, hub)
        signal_id = await _post_signal(hub)
        row = "#dead tbody tr"
        await page.wait_for_selector(row, timeout=timeout(10) * 1000)
        await page.screenshot(path=str(ARTIFACTS / "console-dead-letters.png"))
        healthy.set()
        await page.click(f"{row} button.replay")
        await hub.queue.wait_idle(timeout=timeout(10))
        assert received == [signal_id]
        await page.wait_for_selector(f"{row}", state="detached", timeout=timeout(5) * 1000)
    finally:
        await runner.cleanup()


async def test_feed_resumes_without_duplicates_after_the_server_restarts(
    browser: Any, hub_factory: HubFactory, tmp_path: Path
) -> None:
    """After a hub restart on the same ports the feed reconnects and shows each signal once."""
    http_port, ws_port = free_port(), free_port()
    server = ServerSection(
        http_port=http_port, ws_port=ws_port, state_dir=str(tmp_path / "state"), secret="s" * 32
    )
    hub = await hub_factory(make_config(tmp_path / "state", server=server))
    page = await _login(browser, hub)
    first = [await _post_signal(hub, s) for s in ("EURUSD", "XAUUSD", "BTCUSD")]
    for signal_id in first:
        await page.wait_for_selector(f'#feed li[data-id="{signal_id}"]', timeout=timeout(5) * 1000)
    await hub.stop()
    await page.wait_for_selector("#feed-state[data-status=warn]", timeout=timeout(10) * 1000)
    hub2 = await hub_factory(make_config(tmp_path / "state", server=server))
    await page.wait_for_selector("#feed-state[data-status=pass]", timeout=timeout(30) * 1000)
    late = await _post_signal(hub2, "EURUSD")
    await page.wait_for_selector(f'#feed li[data-id="{late}"]', timeout=timeout(5) * 1000)
    ids = await page.eval_on_selector_all("#feed li[data-id]", "els => els.map(e => e.dataset.id)")
    assert sorted(ids) == sorted([*first, late])


async def test_sync_conflict_is_shown_and_resolved_from_the_console(
    browser: Any, hub_factory: HubFactory, tmp_path: Path
) -> None:
    """Two clients write one record concurrently: the console lists the conflict; Keep client
    settles it (the discarded client version becomes the record)."""
    config = make_config(tmp_path / "state", sync=SyncSection(enabled=True, collections="notes"))
    hub = await hub_factory(config)
    now = int(time.time() * 1000)
    base = f"http://127.0.0.1:{hub.http_port}/sync/v1/push"
    async with aiohttp.ClientSession() as s:
        for client, ms, text in (
            ("alice/phone", now - 1000, "newer"),
            ("alice/tab", now - 5000, "older"),
        ):
            body = {
                "client_id": client,
                "mutations": [
                    {
                        "mutation_id": 1,
                        "collection": "notes",
                        "id": "n1",
                        "op": "put",
                        "data": {"text": text},
                        "version": f"{ms:015d}-00000-{client.replace('/', '.')}",
                    }
                ],
            }
            headers = {"Authorization": f"Bearer {hub.authenticator.issue('alice', ttl=60)}"}
            async with s.post(base, json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
    page = await _login(browser, hub)
    row = "#conflicts tbody tr"
    await page.wait_for_selector(row, timeout=timeout(10) * 1000)
    await page.screenshot(path=str(ARTIFACTS / "console-sync.png"))
    await page.click(f"{row} button.resolve-client")
    await page.wait_for_selector(row, state="detached", timeout=timeout(10) * 1000)
    record = await hub.sync.get("notes", "n1")
    assert record.data == {"text": "older"}
