"""SyncClient against sync_app over real loopback HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fokha_integration.errors import BackendUnavailableError, ValidationError
from fokha_integration.sync import Collection, MemorySyncStore, SyncConfig, SyncService
from fokha_integration.sync._client import SyncClient, SyncClientConfig
from fokha_integration.ws import TokenAuthenticator
from tests.support import timeout

from .helpers import DirectTransport, LoopbackServer

SECRET = "s" * 40


def no_negative(data: Any) -> None:
    """Refuse a negative qty."""
    if data.get("qty", 0) < 0:
        raise ValidationError("qty", "must not be negative", data["qty"])


@pytest.fixture
async def server() -> AsyncIterator[LoopbackServer]:
    """A memory-backed service behind sync_app on loopback."""
    svc = SyncService(MemorySyncStore(), ["w", Collection("v", validate=no_negative)])
    await svc.start()
    srv = LoopbackServer(svc)
    await srv.start()
    yield srv
    await srv.stop()
    await svc.close()


async def test_two_clients_converge_over_http(server: LoopbackServer, tmp_path: Path) -> None:
    """Puts and deletes from one client reach the other after a sync each."""
    a = SyncClient(tmp_path / "a.db", server.url, ["w"], client_id="a")
    b = SyncClient(tmp_path / "b.db", server.url, ["w"], client_id="b")
    try:
        await a.put("w", "1", {"sym": "EURUSD"})
        await a.put("w", "2", {"sym": "GBPUSD"})
        await a.sync()
        await b.sync()
        assert await b.query("w") == {"1": {"sym": "EURUSD"}, "2": {"sym": "GBPUSD"}}
        await b.delete("w", "1")
        await b.sync()
        await a.sync()
        assert await a.query("w") == {"2": {"sym": "GBPUSD"}}
        assert a.stats().pending == 0
    finally:
        await a.close()
        await b.close()


async def test_download_never_overwrites_a_pending_write(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """A pending local write stays visible over a downloaded older change, then wins by HLC."""
    # The client's clock is a second ahead: its write is the later one.
    a = SyncClient(
        tmp_path / "a.db", server.url, ["w"], client_id="a", wall=lambda: time.time() + 1
    )
    try:
        await server.service.put("w", "x", {"v": "server"})
        await a.put("w", "x", {"v": "local"})
        # Pull only: the outbox is still pending.
        await a.pull()
        assert await a.get("w", "x") == {"v": "local"}
        await a.sync()
        assert await a.get("w", "x") == {"v": "local"}
        rec = await server.service.get("w", "x")
        assert rec is not None
        assert rec.data == {"v": "local"}
    finally:
        await a.close()


async def test_rejected_mutation_goes_to_dead_letters(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """A mutation the validator refuses is dead-lettered and the next one still applies."""
    a = SyncClient(tmp_path / "a.db", server.url, ["v"], client_id="a")
    try:
        await a.put("v", "bad", {"qty": -1})
        await a.put("v", "good", {"qty": 1})
        await a.sync()
        [dead] = await a.dead_letters()
        assert dead["id"] == "bad"
        assert dead["reason"].startswith("invalid")
        assert await a.query("v") == {"good": {"qty": 1}}
        assert a.stats().pending == 0
    finally:
        await a.close()


async def test_poison_mutation_is_buried_and_ids_closed(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """A mutation the server refuses as malformed (400) is dead-lettered, the rest renumbered."""
    a = SyncClient(tmp_path / "a.db", server.url, ["w", "gone"], client_id="a")
    try:
        await a.put("w", "1", {"n": 1})
        await a.put("gone", "x", {"n": 2})  # the server has no such collection
        await a.put("w", "3", {"n": 3})
        a.collections = ("w",)  # pull only what the server serves
        await a.sync()
        [dead] = await a.dead_letters()
        assert dead["collection"] == "gone"
        assert await a.query("w") == {"1": {"n": 1}, "3": {"n": 3}}
        status = await server.service.status()
        assert [c.last_mutation_id for c in status.clients] == [2]
    finally:
        await a.close()


async def test_lost_responses_apply_once(server: LoopbackServer, tmp_path: Path) -> None:
    """A push whose answer is lost is re-sent; the server answers duplicates, applies once."""
    calls = {"n": 0}

    def fault(route: str) -> str | None:
        calls["n"] += 1
        return "drop_response" if route == "push" and calls["n"] == 1 else None

    a = SyncClient(tmp_path / "a.db", DirectTransport(server.service, fault), ["w"], client_id="a")
    try:
        for i in range(5):
            await a.put("w", str(i), {"i": i})
        with pytest.raises(BackendUnavailableError):
            await a.sync()
        await a.sync()
        stats = server.service.stats()
        assert stats.applied == 5
        assert stats.duplicates == 5
        assert a.stats().resent_batches == 1
        assert a.stats().pending == 0
    finally:
        await a.close()


async def test_background_loop_rearms_after_failures(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """The loop keeps retrying through a partition and syncs once it heals (poke-driven)."""
    transport = DirectTransport(server.service)
    transport.partitioned = True
    a = SyncClient(
        tmp_path / "a.db",
        transport,
        ["w"],
        client_id="a",
        config=SyncClientConfig(interval=60, backoff_base=0.01, backoff_max=0.02),
    )
    try:
        await a.put("w", "1", {"n": 1})
        a.start()
        stats = await a.wait_until(lambda s: s.failures >= 3, timeout=timeout(10))
        assert stats.pending == 1
        transport.partitioned = False
        a.poke()
        await a.wait_until(lambda s: s.pending == 0, timeout=timeout(10))
        assert await server.service.get("w", "1") is not None
    finally:
        await a.close()


async def test_http_refusals_are_problem_json(tmp_path: Path) -> None:
    """Auth, media type, size and JSON errors are problem+json with a code and field."""
    svc = SyncService(MemorySyncStore(), ["w"], config=SyncConfig(max_body_bytes=2048))
    await svc.start()
    auth = TokenAuthenticator(SECRET)
    srv = LoopbackServer(svc, authenticator=auth)
    await srv.start()
    token = auth.issue("alice", ttl=60)
    pull = {"client_id": "alice/phone", "collections": ["w"]}
    try:
        async with aiohttp.ClientSession() as http:

            async def post(
                body: Any, *, tok: str | None = token, ctype: str = "application/json"
            ) -> tuple[int, Any, str]:
                headers = {"Content-Type": ctype}
                if tok:
                    headers["Authorization"] = f"Bearer {tok}"
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                async with http.post(f"{srv.url}/v1/pull", data=data, headers=headers) as r:
                    return r.status, await r.json(content_type=None), r.headers["Content-Type"]

            status, body, ctype = await post(pull)
            assert status == 200
            assert ctype.startswith("application/json")
            assert (await post(pull, tok=None))[0] == 401
            status, body, ctype = await post({**pull, "client_id": "bob"})
            assert (status, body["field"]) == (403, "client_id")
            assert ctype.startswith("application/problem+json")
            assert (await post(pull, ctype="text/plain"))[0] == 415
            assert (await post(b"{" * 3000))[0] == 413
            status, body, _ = await post(b"{nope")
            assert (status, body["code"], body["field"]) == (400, "bad_json", "body")
            status, body, _ = await post({**pull, "limit": "many"})
            assert (status, body["field"]) == (400, "limit")
    finally:
        await srv.stop()
        await svc.close()


async def test_client_behind_the_horizon_resets_once(tmp_path: Path) -> None:
    """A silent client past the horizon gets exactly one reset_required and converges."""
    now = {"t": 1_700_000_000.0}
    svc = SyncService(
        MemorySyncStore(), ["w"], config=SyncConfig(horizon=60.0), wall=lambda: now["t"]
    )
    await svc.start()
    old = SyncClient(
        tmp_path / "old.db", DirectTransport(svc), ["w"], client_id="old", wall=lambda: now["t"]
    )
    live = SyncClient(
        tmp_path / "live.db", DirectTransport(svc), ["w"], client_id="live", wall=lambda: now["t"]
    )
    try:
        for rid in "abc":
            await live.put("w", rid, {"r": rid})
        await live.sync()
        await old.sync()
        now["t"] += 1
        await live.delete("w", "a")
        await live.sync()
        await live.sync()  # acknowledges the cursor past the tombstone
        now["t"] += 120  # "old" falls silent past the horizon
        await live.sync()
        assert await svc.compact() == 1
        assert (await svc.status()).tombstones == 0
        await old.sync()
        await old.sync()
        assert old.stats().resets == 1
        assert await old.query("w") == await live.query("w") == {"b": {"r": "b"}, "c": {"r": "c"}}
    finally:
        await old.close()
        await live.close()


async def test_push_pokes_a_websocket_channel(tmp_path: Path) -> None:
    """A committed push publishes a data-less notice on sync.poke; a poked client pulls."""
    from fokha_integration.sync._app import POKE_CHANNEL
    from fokha_integration.ws import WebSocketClient, WebSocketServer

    ws = WebSocketServer(port=0)
    await ws.start()
    svc = SyncService(MemorySyncStore(), ["w"])
    await svc.start()
    srv = LoopbackServer(svc, poke=(ws, POKE_CHANNEL))
    await srv.start()
    writer = SyncClient(tmp_path / "w.db", srv.url, ["w"], client_id="writer")
    reader = SyncClient(
        tmp_path / "r.db",
        srv.url,
        ["w"],
        client_id="reader",
        config=SyncClientConfig(interval=3600),
    )
    try:
        async with WebSocketClient(ws.url) as sub:
            await sub.subscribe(POKE_CHANNEL)
            reader.start()
            await writer.put("w", "1", {"n": 1})
            await writer.sync()
            msg = await sub.next_message(timeout=10)
            assert msg.data == {"collections": ["w"]}
            reader.poke()
            await reader.wait_until(lambda s: s.pulls >= 2, timeout=timeout(10))
            assert await reader.get("w", "1") == {"n": 1}
    finally:
        await writer.close()
        await reader.close()
        await srv.stop()
        await svc.close()
        await ws.close()


async def test_client_halves_batches_a_server_refuses_as_too_big(tmp_path: Path) -> None:
    """A server with a smaller batch limit answers 400 on 'mutations'; the client splits."""
    from fokha_integration.sync import Limits

    svc = SyncService(MemorySyncStore(), ["w"], config=SyncConfig(limits=Limits(max_mutations=4)))
    await svc.start()
    a = SyncClient(
        tmp_path / "a.db",
        DirectTransport(svc),
        ["w"],
        client_id="a",
        config=SyncClientConfig(push_batch=50),
    )
    try:
        for i in range(20):
            await a.put("w", str(i), {"i": i})
        await a.sync()
        assert a.stats().pending == 0
        assert len(await a.query("w")) == 20
        assert svc.stats().applied == 20
    finally:
        await a.close()


async def test_server_restored_from_backup(tmp_path: Path) -> None:
    """A server behind its acknowledgements gets held mutations again; else a clear error."""
    from fokha_integration.errors import ProtocolError

    first = SyncService(MemorySyncStore(), ["w"])
    await first.start()
    transport = DirectTransport(first)
    a = SyncClient(tmp_path / "a.db", transport, ["w"], client_id="a")
    try:
        await a.put("w", "1", {"n": 1})
        await a.push()  # acknowledged, still held until a pull confirms
        transport.service = restored = SyncService(MemorySyncStore(), ["w"])  # the "backup"
        await restored.start()
        await a.put("w", "2", {"n": 2})
        await a.sync()
        assert await restored.get("w", "1") is not None
        assert await restored.get("w", "2") is not None
        transport.service = empty = SyncService(MemorySyncStore(), ["w"])
        await empty.start()
        await a.put("w", "3", {"n": 3})
        with pytest.raises(ProtocolError) as info:
            await a.sync()
        assert info.value.code == "mutation_gap"
    finally:
        await a.close()
