"""The replicated key-value store side by side: stalwart, etcd 3.4 and PySyncObj, 3 members each.

Run: ``.venv/bin/python -m bench.bench_kv [--seconds 15] [--runs 3] [--clients 1000] [--gens 4]
[--systems stalwart,etcd,etcd-http,pysyncobj]`` (also ``stalwart bench kv`` with the same options).

For each run and system: a fresh 3-member cluster on 127.0.0.1 (free ports, its own temp data
dirs), then ``--gens`` load-generator processes (bench._kv_gen) with ``--clients`` closed-loop
writers in all, each putting 64-byte values to random keys for ``--seconds``. Reported per
system: the median over runs of the throughput (acknowledged puts per second), of p50 and p99
latency, of the servers' CPU use (cores, and CPU microseconds per acknowledged put, all three
members together), of the generators' CPU per put, and of the busiest generator's CPU use (the
fraction of one core: near 1.0 means the generator, not the system, set the pace), and the
seconds per second the members' threads were runnable but waiting for a CPU (from
/proc/PID/task/*/schedstat: well above their CPU use means the machine was the bottleneck). On a shared
machine the CPU per put is the steadiest figure: divide the cores a quiet machine has by the
server and generator CPU per put for the ceiling this machine allows.

* stalwart: ``stalwart node`` x3, fsync on (the default), through ``AsyncKVClient`` (one per
  generator, all writers multiplexed on its connections).
* etcd 3.4 (Debian's etcd-server): fsync on (etcd always fsyncs its WAL), through its native
  gRPC API (``KV.Put`` with grpcio, the protobuf request written as raw bytes: no generated
  stubs), two HTTP/2 channels per member per generator. ``etcd-http`` drives the same cluster
  through the v3 HTTP/JSON gateway (``POST /v3/kv/put``) on keep-alive HTTP/1.1 connections
  (a minimal asyncio client: aiohttp cost about 250 µs of generator CPU per put), one per
  writer: cheaper for the generator, dearer for etcd (the gateway's JSON-to-gRPC hop).
* PySyncObj: three members with a ReplDict behind a line protocol (bench._kv_pysyncobj_node),
  one TCP connection per writer, spread over the members. Its journal never fsyncs.

Systems are interleaved run by run so a noisy moment hurts all of them alike. Benchmarks are
never timed assertions: this prints a table (and ``--json`` writes the raw figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SYSTEMS = ("stalwart", "etcd", "etcd-http", "pysyncobj")
ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Cluster:
    endpoints: list[str]
    procs: list[subprocess.Popen[bytes]]
    key: str = ""

    def cpu_s(self) -> float:
        """User + system CPU seconds of the member processes so far (from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for p in self.procs:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def runqueue_wait_s(self) -> float:
        """Seconds the members' threads spent runnable but waiting for a CPU (/proc schedstat):
        high means the machine, not the system under test, set the pace."""
        total = 0
        for p in self.procs:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{p.pid}/task").iterdir():
                    total += int((task / "schedstat").read_text().split()[1])
        return total / 1e9

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait(check: Any, what: str, procs: list[subprocess.Popen[bytes]], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{what}: a member exited early")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready in {timeout_s} s")


def _log(root: Path, name: str) -> Any:
    return (root / f"{name}.log").open("ab")


def start_stalwart(root: Path) -> Cluster:
    import asyncio

    from stalwart.drill import wait_serving
    from stalwart.drill._cluster import ClusterLayout

    layout = ClusterLayout.create(root, 3)
    peers = ",".join(f"{n}={HOST}:{layout.peer_ports[n]}" for n in layout.node_ids)
    procs = []
    for n in layout.node_ids:
        argv = [sys.executable, "-m", "stalwart", "node", "--id", str(n), "--peers", peers,
                "--data-dir", str(root / f"node-{n}"), "--listen", f"{HOST}:{layout.peer_ports[n]}",
                "--client-listen", layout.endpoint(n), "--cluster-key-file", str(layout.key_path),
                "--log-level", "WARNING"]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=_log(root, f"node-{n}"), stderr=subprocess.STDOUT))
    cluster = Cluster(layout.endpoints(), procs, layout.cluster_key.decode())
    try:
        asyncio.run(wait_serving(layout, 30))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_etcd(root: Path) -> Cluster:
    ports = free_ports(6)
    names = ["m1", "m2", "m3"]
    initial = ",".join(f"{m}=http://{HOST}:{ports[2 * i + 1]}" for i, m in enumerate(names))
    procs = []
    for i, m in enumerate(names):
        client, peer = ports[2 * i], ports[2 * i + 1]
        curl, purl = f"http://{HOST}:{client}", f"http://{HOST}:{peer}"
        argv = [ETCD, "--name", m, "--data-dir", str(root / m),
                "--listen-client-urls", curl, "--advertise-client-urls", curl,
                "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                "--initial-cluster", initial, "--initial-cluster-token", "bench",
                "--initial-cluster-state", "new"]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=_log(root, m), stderr=subprocess.STDOUT))
    endpoints = [f"{HOST}:{ports[2 * i]}" for i in range(3)]
    cluster = Cluster(endpoints, procs)

    def healthy() -> bool:
        for e in endpoints:
            with urllib.request.urlopen(f"http://{e}/health", timeout=1) as r:
                if b"true" not in r.read():
                    return False
        return True

    try:
        _wait(healthy, "etcd", procs)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_pysyncobj(root: Path) -> Cluster:
    ports = free_ports(6)
    raft = [f"{HOST}:{ports[2 * i]}" for i in range(3)]
    procs = []
    for i in range(3):
        partners = ",".join(a for j, a in enumerate(raft) if j != i)
        argv = [sys.executable, "-m", "bench._kv_pysyncobj_node", raft[i], partners, str(ports[2 * i + 1]),
                str(root / f"p{i}")]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=_log(root, f"p{i}"), stderr=subprocess.STDOUT))
    endpoints = [f"{HOST}:{ports[2 * i + 1]}" for i in range(3)]
    cluster = Cluster(endpoints, procs)

    def writes() -> bool:
        for e in endpoints:
            with socket.create_connection(e.split(":"), timeout=2) as s:  # type: ignore[arg-type]
                s.sendall(b"ready 1\n")
                if s.makefile("rb").readline() != b"ok\n":
                    return False
        return True

    try:
        _wait(writes, "pysyncobj", procs)
    except BaseException:
        cluster.stop()
        raise
    return cluster


STARTERS = {
    "stalwart": start_stalwart,
    "etcd": start_etcd,
    "etcd-http": start_etcd,
    "pysyncobj": start_pysyncobj,
}


@contextlib.contextmanager
def cluster_of(system: str) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-kv-{system}-"))
    cluster = STARTERS[system](root)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _percentile(sorted_xs: list[float], q: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(q * len(sorted_xs)))]


def run_once(system: str, seconds: float, clients: int, gens: int) -> dict[str, Any]:
    with cluster_of(system) as cluster, tempfile.TemporaryDirectory() as tmp:
        start_at = time.time() + 3.0  # time for every generator to connect first
        procs, outs = [], []
        for g in range(gens):
            spec = {"system": system, "endpoints": cluster.endpoints, "key": cluster.key, "index": g,
                    "concurrency": clients // gens + (1 if g < clients % gens else 0), "seconds": seconds,
                    "start_at": start_at}  # fmt: skip
            out = Path(tmp) / f"gen-{g}.json"
            outs.append(out)
            procs.append(
                subprocess.Popen([sys.executable, "-m", "bench._kv_gen", json.dumps(spec), str(out)])
            )
        time.sleep(max(0.0, start_at - time.time()))
        cpu0, wait0, wall0 = cluster.cpu_s(), cluster.runqueue_wait_s(), time.monotonic()
        time.sleep(seconds)
        cpu1, wait1, wall1 = cluster.cpu_s(), cluster.runqueue_wait_s(), time.monotonic()
        for p in procs:
            if p.wait(timeout=seconds + 60) != 0:
                raise RuntimeError(f"a {system} load generator failed")
        results = [json.loads(o.read_text()) for o in outs]
    samples = sorted(s for r in results for s in r["samples"])
    count = sum(r["count"] for r in results)
    wall = max(r["wall_s"] for r in results)
    return {
        "system": system,
        "ops_per_s": count / wall,
        "p50_ms": _percentile(samples, 0.50) * 1000,
        "p99_ms": _percentile(samples, 0.99) * 1000,
        "errors": sum(r["errors"] for r in results),
        "server_cpu_cores": (cpu1 - cpu0) / (wall1 - wall0),
        "server_runqueue_wait": (wait1 - wait0) / (wall1 - wall0),
        "gen_cpu_max": max(r["cpu_s"] / r["wall_s"] for r in results),
        "gen_cpu_cores": sum(r["cpu_s"] for r in results) / wall,
        # CPU per acknowledged put: what a loaded machine changes least
        "server_us_per_put": (cpu1 - cpu0) / max(1, count) * 1e6 * wall / (wall1 - wall0),
        "gen_us_per_put": sum(r["cpu_s"] for r in results) / max(1, count) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000, help="closed-loop writers in all")
    parser.add_argument("--gens", type=int, default=4, help="load-generator processes")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--json", dest="json_path", default=None, help="write every run's figures here")
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    runs: list[dict[str, Any]] = []
    for r in range(args.runs):
        for system in systems:
            result = run_once(system, args.seconds, args.clients, args.gens)
            result["run"] = r
            runs.append(result)
            x = result
            print(f"run {r + 1} {system:10s} {x['ops_per_s']:9.0f} puts/s  p50 {x['p50_ms']:7.1f} ms  "
                  f"p99 {x['p99_ms']:7.1f} ms  servers {x['server_cpu_cores']:.2f} cores "
                  f"(waiting for a CPU {x['server_runqueue_wait']:.2f})  "
                  f"busiest generator {x['gen_cpu_max']:.2f}  errors {x['errors']}", flush=True)  # fmt: skip
    print(f"\n3 members on loopback, 64-byte values, {args.clients} closed-loop writers in {args.gens} "
          f"generator processes, {args.seconds:.0f} s per run, median of {args.runs} runs, "
          f"{os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    header = (
        "| system | puts/s | p50 ms | p99 ms | server CPU (cores) | servers waiting for a CPU (s/s) | "
        "server CPU µs/put | generator CPU µs/put | busiest generator (core) |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    for system in systems:
        mine = [x for x in runs if x["system"] == system]

        def med(field: str, rows: list[dict[str, Any]] = mine) -> float:
            return float(statistics.median(float(x[field]) for x in rows))

        print(f"| {system} | {med('ops_per_s'):,.0f} | {med('p50_ms'):.1f} | {med('p99_ms'):.1f} | "
              f"{med('server_cpu_cores'):.2f} | {med('server_runqueue_wait'):.2f} | "
              f"{med('server_us_per_put'):.0f} | "
              f"{med('gen_us_per_put'):.0f} | {med('gen_cpu_max'):.2f} |")  # fmt: skip
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
