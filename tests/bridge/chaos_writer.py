"""The Python side of the crash-chaos test, run as a process that gets SIGKILLed.

``python chaos_writer.py ROOT N WINDOW`` sends requests ``r000000 .. r<N-1>`` (kind
``order``) through :class:`FileBridge` with at most WINDOW in flight, and appends one
line ``<request id> <status> <ticket>`` to ``ROOT/replies.log`` per reply it receives
(through ``request()`` or, after a restart, through the handler). On start it reads
that log and asks again, with the same ids, for every request without a reply. It
prints ``ready`` once its bridge has started and ``all-replied`` once every request has
one, then keeps serving (late duplicate
replies) until ``ROOT/stop`` exists.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fokha_integration.bridge import FileBridge, Message, PollConfig, Reply


async def main() -> None:
    root, n, window = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    log_path = root / "replies.log"
    replied: set[str] = set()
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            replied.add(line.split(" ")[0])
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - one line per reply

    def record(request_id: str, status: str, ticket: object) -> None:
        if request_id not in replied:
            log.write(f"{request_id} {status} {ticket}\n")
            log.flush()
            replied.add(request_id)

    async def handler(message: Message) -> None:
        # Replies to requests a previous run sent arrive here after a restart.
        if message.type == "reply" and message.in_reply_to is not None:
            status = message.status.value if message.status else "?"
            record(message.in_reply_to, status, message.details.get("ticket"))

    bridge = FileBridge(
        root,
        handler=handler,
        poll=PollConfig(busy=0.001, idle=0.02, busy_window=1.0),
        grace=60.0,
        heartbeat_interval=None,
    )
    await bridge.start()
    # The test kills this process only after this line: a kill during start-up would
    # only measure the interpreter's import time, not the bridge.
    print("ready", flush=True)
    gate = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        request_id = f"r{i:06d}"
        async with gate:
            if request_id in replied:
                return
            while True:
                try:
                    reply: Reply = await bridge.request(
                        "order",
                        {"symbol": "EURUSD", "volume": 0.01, "n": i},
                        id=request_id,
                        timeout=60,
                        resend_after=3.0,
                    )
                except TimeoutError:
                    continue
                record(request_id, reply.status.value, reply.ticket)
                return

    await asyncio.gather(*(one(i) for i in range(n)))
    print("all-replied", flush=True)
    stop = root / "stop"
    while not stop.exists():
        await asyncio.sleep(0.02)  # serving late duplicates until the test says stop
    await bridge.close()
    log.close()


if __name__ == "__main__":
    asyncio.run(main())
