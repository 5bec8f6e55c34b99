"""One PySyncObj member for bench_kv: a replicated dict behind a tiny line protocol.

Run: ``python -m bench._kv_pysyncobj_node SELF_RAFT PARTNER,PARTNER CLIENT_PORT DATA_DIR``.

Each request line is ``<key> <value>\\n``; the answer line is ``ok`` once the write committed
(PySyncObj's callback), or ``err <code>``. Requests on one connection may be pipelined; answers
come back in completion order, which for one connection's writes is their commit order. A
follower forwards writes to the leader itself (PySyncObj does that), so the load generator may
use any member. PySyncObj's journal file is written through mmap and never fsynced.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.batteries import ReplDict


async def serve(obj: SyncObj, store: ReplDict, port: int) -> None:
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def done(_result: object, error: int) -> None:
            line = b"ok\n" if error == 0 else f"err {error}\n".encode()
            loop.call_soon_threadsafe(writer.write, line)

        try:
            while line := await reader.readline():
                key, _, value = line.rstrip(b"\n").partition(b" ")
                store.set(key.decode(), value.decode(), callback=done)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    self_addr, partners, port, data_dir = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
    os.makedirs(data_dir, exist_ok=True)
    conf = SyncObjConf(
        journalFile=os.path.join(data_dir, "journal"),
        fullDumpFile=os.path.join(data_dir, "dump"),
        dynamicMembershipChange=False,
        appendEntriesUseBatch=True,
        commandsQueueSize=200_000,
    )
    store = ReplDict()
    obj = SyncObj(self_addr, partners, conf=conf, consumers=[store])
    try:
        asyncio.run(serve(obj, store, port))
    finally:
        obj.destroy()


if __name__ == "__main__":
    main()
