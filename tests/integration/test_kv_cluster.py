"""The key-value store on real processes: `stalwart node` x 3 on loopback, SIGKILL, restarts,
lost and corrupt data directories, malformed input, and the cluster key.

Each test starts its own cluster under tmp_path (free ports, its own key) and stops it by PID.
"""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stalwart import wire
from stalwart.check import Operation, Status, Verdict, check_operations
from stalwart.client import AsyncKVClient, KVRequestError, KVTimeoutError, KVUnavailableError
from stalwart.client._protocol import (
    Consistency,
    ReadRequest,
    Response,
    ResponseStatus,
    WriteRequest,
    handshake,
    pack_batch,
    unpack_batch,
)
from stalwart.errors import AuthenticationError, StalwartError
from stalwart.kv import MAX_VALUE_BYTES, Get, Put, encode_command, encode_query
from stalwart.server._cluster import ClusterSpec, node_args, spawn_node, start_cluster, stop_cluster
from tests.servers.kv import FAST, client, cluster, key_of

pytestmark = pytest.mark.integration

ROUNDS = 10 if os.environ.get("STALWART_LONG") == "1" else 1


async def statuses(spec: ClusterSpec) -> dict[str, dict[str, Any]]:
    out = {}
    async with client(spec, timeout_s=1.0) as kv:
        for node in spec.nodes:
            with contextlib.suppress(StalwartError):
                out[node.id] = await kv.status(node.client)
    return out


async def wait_leader(spec: ClusterSpec, timeout_s: float = 15.0, exclude: str | None = None) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for node_id, st in (await statuses(spec)).items():
            if st["role"] == "leader" and node_id != exclude:
                return node_id
        await asyncio.sleep(0.1)
    raise AssertionError("no leader elected")


def sigkill(spec: ClusterSpec, node_id: str) -> None:
    node = spec.node(node_id)
    assert node.pid is not None
    os.kill(node.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{node.pid}").exists():
        stat = Path(f"/proc/{node.pid}/stat").read_text() if Path(f"/proc/{node.pid}/stat").exists() else ""
        if not stat or stat.rsplit(")", 1)[-1].split()[0] == "Z":
            break
        time.sleep(0.02)
    node.pid = None
    spec.save()


def restart(spec: ClusterSpec, node_id: str) -> None:
    spawn_node(spec, node_id)
    spec.save()


# ---- SIGKILL the leader under load --------------------------------------------------------------


async def _load(
    kv: AsyncKVClient, worker: int, stop: asyncio.Event, acked: dict[str, bytes], out: dict[str, int]
):
    i = 0
    appends = unknown = 0
    while not stop.is_set():
        i += 1
        key, value = f"w{worker}/{i}", f"{worker}:{i}".encode()
        try:
            await kv.put(key, value)
            acked[key] = value
            await kv.append(f"count/{worker}", b"x")
            appends += 1
        except (KVTimeoutError, KVUnavailableError):
            unknown += 1  # outcome unknown: not counted as acknowledged
    out[f"appends/{worker}"] = appends
    out[f"unknown/{worker}"] = unknown


def test_sigkill_leader_under_load_loses_no_acknowledged_write(cluster: ClusterSpec) -> None:
    async def main() -> None:
        leader = await wait_leader(cluster)
        acked: dict[str, bytes] = {}
        counts: dict[str, int] = {}
        stop = asyncio.Event()
        async with client(cluster, timeout_s=3.0) as kv:
            workers = [asyncio.create_task(_load(kv, w, stop, acked, counts)) for w in range(8)]
            await asyncio.sleep(1.5)
            before = len(acked)
            sigkill(cluster, leader)
            new_leader = await wait_leader(cluster, exclude=leader)
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*workers)
            assert before > 20 and len(acked) > before, "the load ran before and after the kill"
            restart(cluster, leader)
            for key, value in acked.items():
                got = await kv.get(key)
                assert got is not None and got.value == value, (
                    f"acknowledged {key} lost (leader {new_leader})"
                )
            for w in range(8):
                got = await kv.get(f"count/{w}")
                length = 0 if got is None else len(got.value)
                # Exactly once: every acknowledged append applied once; an unknown one at most once.
                assert counts[f"appends/{w}"] <= length <= counts[f"appends/{w}"] + counts[f"unknown/{w}"] + 1
            # The restarted old leader catches up with everything.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                st = (await statuses(cluster)).get(leader)
                if st and st["applied"] >= (await kv.status())["commit"] - 5:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the restarted node did not catch up")

    asyncio.run(main())


# ---- restart every node at once ------------------------------------------------------------------


def test_restart_every_node_at_once_keeps_the_data(cluster: ClusterSpec) -> None:
    async def main() -> None:
        async with client(cluster) as kv:
            revisions = await asyncio.gather(*(kv.put(f"k{i}", f"v{i}".encode()) for i in range(200)))
            await kv.put("ttl-free", b"stays")
            await kv.put("short-lived", b"x", ttl_s=1.5)
        for node in cluster.nodes:
            sigkill(cluster, node.id)
        for node in cluster.nodes:
            restart(cluster, node.id)
        await wait_leader(cluster)
        async with client(cluster) as kv:
            # A TTL key written before the restart expires without further writes: the new
            # leader finds it in its state and proposes ticks.
            deadline = time.monotonic() + 10
            while await kv.get("short-lived") is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert await kv.get("short-lived") is None
            rows = await kv.range("", limit=1000)
            assert "ttl-free" in {r.key for r in rows}
            rows = await kv.range("k", limit=1000)
            assert {r.key: r.value for r in rows} == {f"k{i}": f"v{i}".encode() for i in range(200)}
            assert max(r.mod_revision for r in rows) == max(revisions)
            assert (await kv.put("after", b"1")) > max(revisions)

    asyncio.run(main())


# ---- a lost data directory comes back through a snapshot ---------------------------------------


def test_deleted_data_dir_rejoins_through_a_snapshot(tmp_path: Path) -> None:
    spec = start_cluster(tmp_path / "c", 3, snapshot_every=50, **FAST)
    try:

        async def main() -> None:
            leader = await wait_leader(spec)
            victim = next(n for n in spec.nodes if n.id != leader)
            async with client(spec) as kv:
                await asyncio.gather(*(kv.put(f"a{i}", b"x" * 100) for i in range(300)))
                sigkill(spec, victim.id)
                shutil.rmtree(victim.data_dir)
                await asyncio.gather(*(kv.put(f"b{i}", b"y") for i in range(100)))
                commit = (await kv.status())["commit"]
                log_offset = Path(victim.log).stat().st_size
                restart(spec, victim.id)
                deadline = time.monotonic() + 20
                st: dict[str, Any] = {}
                while time.monotonic() < deadline:
                    st = (await statuses(spec)).get(victim.id, {})
                    if st.get("applied", 0) >= commit:
                        break
                    await asyncio.sleep(0.2)
                log_tail = "\n".join(Path(victim.log).read_text().splitlines()[-15:])
                assert st.get("applied", 0) >= commit, f"{victim.id} did not catch up: {st}\n{log_tail}"
                assert st["snapshot_index"] > 0, "it caught up through a snapshot"
                stale = AsyncKVClient([victim.client], cluster_key=key_of(spec))
                async with stale:
                    got = await stale.get("a7", consistency="stale")
                    assert got is not None and got.value == b"x" * 100
                    assert len(await stale.range("b", consistency="stale")) == 100
            # Its disk was empty: any state restored at an index > 0 is the leader's snapshot
            # (reported as boot=True when it arrived before the node's first cycle).
            log = Path(victim.log).read_bytes()[log_offset:].decode()
            restored = [int(i) for i in re.findall(r"state restored node=\S+ index=(\d+)", log)]
            assert max(restored, default=0) > 0, "the state came from the leader's snapshot"

        asyncio.run(main())
    finally:
        stop_cluster(tmp_path / "c", timeout_s=5.0)


# ---- a corrupt WAL: that node refuses to start, the others serve -------------------------------


def test_corrupt_wal_refuses_to_start_with_a_clear_message(cluster: ClusterSpec) -> None:
    async def main() -> str:
        leader = await wait_leader(cluster)
        victim = next(n for n in cluster.nodes if n.id != leader)
        async with client(cluster) as kv:
            await asyncio.gather(*(kv.put(f"k{i}", b"v" * 64) for i in range(200)))
        return victim.id

    victim_id = asyncio.run(main())
    victim = cluster.node(victim_id)
    assert victim.pid is not None
    proc_pid = victim.pid
    os.kill(proc_pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{proc_pid}/cmdline").exists():
        stat = Path(f"/proc/{proc_pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            break
        time.sleep(0.05)
    victim.pid = None
    cluster.save()
    segment = sorted((Path(victim.data_dir) / "wal").glob("*.wal"))[0]
    data = bytearray(segment.read_bytes())
    assert len(data) > 4000, "there are records after the damaged one (not a torn tail)"
    data[40] ^= 0xFF  # inside the first record: corruption before the tail
    segment.write_bytes(bytes(data))
    result = subprocess.run(node_args(cluster, victim), capture_output=True, text=True, timeout=30)
    assert result.returncode == 3, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: corrupt storage, refusing to start:"), last
    assert str(segment) in last and "offset" in last

    async def still_serving() -> None:
        async with client(cluster) as kv:
            assert await kv.put("after-corruption", b"1") > 0
            got = await kv.get("k5")
            assert got is not None and got.value == b"v" * 64

    asyncio.run(still_serving())


# ---- malformed and oversized input ---------------------------------------------------------------


async def _raw_session(
    address: str, key: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, wire.AuthSession]:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    decoder = wire.FrameDecoder(1 << 24)
    session, _ = await handshake(reader, writer, decoder, key=key, my_id="raw-test", initiator=True)
    return reader, writer, session


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: wire.AuthSession,
                     msg: object) -> Response:  # fmt: skip
    writer.write(wire.encode_frame(session.seal(pack_batch([wire.encode(msg)]))))
    decoder = wire.FrameDecoder(1 << 24)
    while True:
        data = await asyncio.wait_for(reader.read(1 << 16), 5)
        assert data, "the node closed the connection"
        for frame in decoder.feed(data):
            body = session.open(frame)
            if body:
                (item,) = unpack_batch(body)
                response = wire.decode(item)
                assert isinstance(response, Response)
                return response


async def _closed_by_node(reader: asyncio.StreamReader) -> bool:
    try:
        while await asyncio.wait_for(reader.read(1 << 16), 5):
            pass
    except ConnectionError:
        return True
    return True


def test_malformed_and_oversized_requests_get_clear_errors(cluster: ClusterSpec) -> None:
    key = key_of(cluster)

    async def main() -> None:
        leader_id = await wait_leader(cluster)
        leader = cluster.node(leader_id)
        async with client(cluster) as kv:
            with pytest.raises(KVRequestError, match="at most"):
                await kv.put("big", b"x" * (MAX_VALUE_BYTES + 1))
            with pytest.raises(KVRequestError):
                await kv.put("", b"empty key")
        reader, writer, session = await _raw_session(leader.client, key)
        bad = await _roundtrip(reader, writer, session, WriteRequest(1, "raw", 1, 0, b"\xc1garbage"))
        assert bad.status is ResponseStatus.ERROR and "bad command" in bad.error
        huge = encode_command(Put("k", b"x" * (MAX_VALUE_BYTES + 10)), 0)
        bad = await _roundtrip(reader, writer, session, WriteRequest(2, "raw", 2, 0, huge))
        assert bad.status is ResponseStatus.ERROR and "values are at most" in bad.error
        ok = await _roundtrip(
            reader, writer, session, ReadRequest(3, encode_query(Get("k")), Consistency.STALE)
        )
        assert ok.status is ResponseStatus.OK, "the connection survived the refused requests"
        # A frame announcing 1 GiB: the connection is dropped from the header alone.
        writer.write((1 << 30).to_bytes(4, "big"))
        assert await _closed_by_node(reader)
        writer.close()
        # Garbage instead of a handshake.
        host, _, port = leader.client.rpartition(":")
        r2, w2 = await asyncio.open_connection(host, int(port))
        w2.write(os.urandom(4096))
        assert await _closed_by_node(r2)
        w2.close()
        # HTTP: oversized and malformed bodies.
        async with aiohttp.ClientSession() as http:
            base = f"http://{leader.http}"
            async with http.put(f"{base}/v1/kv/big", data=b"x" * (MAX_VALUE_BYTES + 1)) as resp:
                assert resp.status == 400 and "at most" in (await resp.json())["error"]
            async with http.put(f"{base}/v1/kv/huge", data=b"x" * (3 * MAX_VALUE_BYTES)) as resp:
                assert resp.status == 413
            async with http.post(f"{base}/v1/kv/a/cas", data=b"{not json") as resp:
                assert resp.status == 400 and "bad CAS body" in (await resp.json())["error"]
            async with http.get(f"{base}/v1/kv?limit=0") as resp:
                assert resp.status == 400
        async with client(cluster) as kv:
            assert await kv.put("still", b"serving") > 0
        log = Path(leader.log).read_text()
        assert "FrameTooLargeError" in log and "client refused" in log

    asyncio.run(main())


# ---- the cluster key -----------------------------------------------------------------------------


def test_client_and_peer_without_the_key_are_refused(cluster: ClusterSpec) -> None:
    async def main() -> None:
        leader_id = await wait_leader(cluster)
        wrong = AsyncKVClient([n.client for n in cluster.nodes], cluster_key=b"w" * 32, timeout_s=3.0)
        async with wrong:
            with pytest.raises(AuthenticationError):
                await wrong.put("intruder", b"1")
        # A "peer" with the wrong key dials a node's peer port.
        from stalwart.raft import Heartbeat
        from stalwart.runtime import Client

        target = cluster.node(leader_id)
        host, _, port = target.peer.rpartition(":")
        fake = Client("n9", b"z" * 32, {target.id: (host, int(port))}, accept=(Heartbeat,))  # type: ignore[arg-type]
        async with fake:
            with pytest.raises(StalwartError):
                await fake.connected(target.id, 1.5)  # type: ignore[arg-type]
        async with client(cluster) as kv:
            assert await kv.get("intruder") is None
            assert await kv.put("member", b"1") > 0
        # HTTP at a follower: redirected to the leader with method and body kept.
        follower = next(n for n in cluster.nodes if n.id != leader_id)
        async with aiohttp.ClientSession() as http:
            url = f"http://{follower.http}/v1/kv/via-http"
            async with http.put(url, data=b"v", allow_redirects=False) as resp:
                assert resp.status == 307 and resp.headers["Location"].startswith(f"http://{target.http}/")
            async with http.put(url, data=b"v") as resp:
                assert resp.status == 200
            async with http.get(f"http://{follower.http}/v1/kv/via-http") as resp:
                assert resp.status == 200 and (await resp.json())["value"] == "dg=="
        log = Path(target.log).read_text()
        assert "client refused" in log and "AuthenticationError" in log
        assert "peer refused" in log

    asyncio.run(main())


def test_sigterm_exits_zero_and_the_cli_works(tmp_path: Path) -> None:
    spec = start_cluster(tmp_path / "c", 1, **FAST)
    try:
        env = {**os.environ, "STALWART_CLUSTER_KEY": ""}
        run = lambda *a: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "stalwart", "kv", "--dir", str(tmp_path / "c"), *a],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        deadline = time.monotonic() + 10
        while (put := run("put", "greeting", "hello")).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert put.returncode == 0, put.stderr
        assert run("get", "greeting").stdout == "hello\n"
        assert run("get", "missing").returncode == 1
        assert run("cas", "greeting", "nope", "x").returncode == 1
        assert run("cas", "greeting", "hello", "bye").returncode == 0
        assert run("del", "greeting").returncode == 0 and run("del", "greeting").returncode == 1
        assert run("--endpoints", "127.0.0.1:1", "get", "x").returncode == 2  # --dir and --endpoints
        node = spec.nodes[0]
        # Stop the node we started ourselves to see its exit status.
        stop_cluster(tmp_path / "c", timeout_s=5.0)
        proc = subprocess.Popen(node_args(spec, node), stderr=subprocess.PIPE, text=True)
        host, _, port = node.client.rpartition(":")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err[-2000:]
        assert "node stopping" in err
    finally:
        stop_cluster(tmp_path / "c", timeout_s=5.0)


# ---- a checked history: linearizable across a leader kill ----------------------------------------


async def _checked_worker(
    kv: AsyncKVClient, process: int, stop: asyncio.Event, ops: list[Operation], rng: random.Random
) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        key = f"reg{rng.randrange(3)}"
        kind = rng.choice(["get", "get", "lease", "put", "cas", "append"])
        start = time.monotonic_ns()
        f, value, output, status = kind, None, None, Status.OK
        try:
            match kind:
                case "get" | "lease":
                    f = "get"
                    got = await kv.get(key, consistency="lease" if kind == "lease" else "linearizable")
                    output = None if got is None else got.value.decode()
                case "put":
                    value = f"p{process}.{i}"
                    await kv.put(key, value.encode())
                case "append":
                    value = f"+{process}.{i}"
                    await kv.append(key, value.encode())
                case "cas":
                    f = "get"  # first read the value to compare with: recorded as a read
                    current = await kv.get(key)
                    frm = "" if current is None else current.value.decode()
                    done = time.monotonic_ns()
                    ops.append(Operation(process, "get", key, None, current and frm, Status.OK, start, done))
                    f, start = "cas", time.monotonic_ns()
                    value = (frm, f"c{process}.{i}")
                    swapped, _ = await kv.cas(key, frm.encode() if current else None, value[1].encode())
                    status = Status.OK if swapped else Status.FAIL
        except (KVTimeoutError, KVUnavailableError):
            ops.append(Operation(process, f, key, value, None, Status.INFO, start, None))
            continue
        ops.append(Operation(process, f, key, value, output, status, start, time.monotonic_ns()))


def test_a_history_across_a_leader_kill_is_linearizable(cluster: ClusterSpec) -> None:
    async def main() -> list[Operation]:
        leader = await wait_leader(cluster)
        ops: list[Operation] = []
        stop = asyncio.Event()
        rng = random.Random(int(os.environ.get("STALWART_SEED", "7")))
        async with client(cluster, timeout_s=2.0) as kv:
            workers = [
                asyncio.create_task(_checked_worker(kv, p, stop, ops, random.Random(rng.random())))
                for p in range(6)
            ]
            await asyncio.sleep(1.0)
            for _ in range(ROUNDS):  # STALWART_LONG=1: more kills, each of the current leader
                sigkill(cluster, leader)
                await asyncio.sleep(1.5)
                restart(cluster, leader)
                await asyncio.sleep(1.0)
                leader = await wait_leader(cluster)
            stop.set()
            await asyncio.gather(*workers)
        return ops

    ops = asyncio.run(main())
    assert sum(op.status is Status.OK for op in ops) > 50, "the workload made progress"
    result = check_operations(ops, model="kv", timeout_s=120)
    assert result.verdict is Verdict.LINEARIZABLE, result


def test_a_paused_leader_is_routed_around_and_rejoins_as_follower(cluster: ClusterSpec) -> None:
    async def main() -> None:
        leader = await wait_leader(cluster)
        pid = cluster.node(leader).pid
        assert pid is not None
        async with client(cluster, timeout_s=6.0) as kv:
            await kv.put("before", b"1")
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                assert await kv.put("during", b"2") > 0, "a new leader took the write"
                assert time.monotonic() - started < 6.0
                assert (await kv.get("before")) is not None
            finally:
                os.kill(pid, signal.SIGCONT)
            # The old leader wakes up, steps down and catches up; nothing it held is lost.
            deadline = time.monotonic() + 15
            st: dict[str, Any] = {}
            while time.monotonic() < deadline:
                st = (await statuses(cluster)).get(leader, {})
                if st.get("role") == "follower" and st.get("applied", 0) >= (await kv.status())["commit"]:
                    break
                await asyncio.sleep(0.2)
            assert st.get("role") == "follower", st
            stale = AsyncKVClient([cluster.node(leader).client], cluster_key=key_of(cluster))
            async with stale:
                got = await stale.get("during", consistency="stale")
                assert got is not None and got.value == b"2"

    asyncio.run(main())
