"""Readable Raft scenarios (tests/raft/*.txt), in the spirit of etcd's interaction testdata.

Each script drives a deterministic in-memory cluster (tests/raft/cluster.py) line by line:
you decide every tick, delivery, drop, partition, crash and restart, and ``expect`` lines
assert the state. The command language is documented in tests/raft/README.md.
"""

from __future__ import annotations

import pathlib
import shlex

import pytest

from stalwart.errors import StalwartError
from stalwart.raft import ConfChange, ProgressState, Role
from stalwart.sansio import NodeId
from tests.raft.cluster import Cluster

SCRIPTS = sorted((pathlib.Path(__file__).resolve().parents[1] / "raft").glob("*.txt"))
MAX_TIMEOUT_TICKS = 100


def _value(text: str) -> object:
    if text in ("true", "false"):
        return text == "true"
    if text.isdigit():
        return int(text)
    return text


def _options(words: list[str]) -> dict[str, object]:
    opts: dict[str, object] = {}
    for word in words:
        key, _, raw = word.partition("=")
        opts[key] = frozenset(raw.split(",")) if key == "mutations" else _value(raw)
    return opts


class Interpreter:
    def __init__(self) -> None:
        self.c: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        assert self.c is not None, "no cluster: start the script with `cluster ...`"
        return self.c

    def run(self, words: list[str]) -> None:
        if self.c is not None:  # "@leader" names the current leader
            words = [str(self.c.leader()) if w == "@leader" else w for w in words]
        cmd, args = words[0], words[1:]
        handler = getattr(self, "do_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}")
        handler(args)

    # ---- setup and driving ------------------------------------------------------------------

    def do_cluster(self, args: list[str]) -> None:
        ids = [a for a in args if "=" not in a]
        self.c = Cluster(ids, **_options([a for a in args if "=" in a]))

    def do_add_node(self, args: list[str]) -> None:
        self.cluster.add_node(args[0])

    def do_campaign(self, args: list[str]) -> None:
        self.cluster.campaign(args[0])

    def do_timeout(self, args: list[str]) -> None:
        """Tick one node until it starts a (pre-)campaign."""
        node = self.cluster.nodes[NodeId(args[0])]
        for _ in range(MAX_TIMEOUT_TICKS):
            before = (node.role, node.term)
            self.cluster.tick(args[0])
            if node.role in (Role.PRE_CANDIDATE, Role.CANDIDATE) and (node.role, node.term) != before:
                return
        raise AssertionError(f"{args[0]} never timed out")

    def do_tick(self, args: list[str]) -> None:
        count = int(args[1]) if len(args) > 1 else 1
        if args[0] == "all":
            self.cluster.tick_all(count)
        else:
            self.cluster.tick(args[0], count)

    def do_stabilize(self, args: list[str]) -> None:
        self.cluster.stabilize()

    def do_run(self, args: list[str]) -> None:
        """``run N``: N rounds of tick-all then stabilize (time passing on a healthy net)."""
        for _ in range(int(args[0])):
            self.cluster.tick_all(1)
            self.cluster.stabilize()

    @staticmethod
    def _link(args: list[str]) -> tuple[str | None, str | None]:
        if not args or args[0] == "all":
            return None, None
        src, _, dst = args[0].partition("->")
        return (None if src == "*" else src), (None if dst == "*" else dst)

    def do_deliver(self, args: list[str]) -> None:
        src, dst = self._link(args)
        limit = int(args[1]) if len(args) > 1 else None
        self.cluster.deliver(src, dst, limit)

    def do_drop(self, args: list[str]) -> None:
        src, dst = self._link(args)
        self.cluster.drop(src, dst)

    def do_partition(self, args: list[str]) -> None:
        groups, current = [], []
        for word in args:
            if word == "|":
                groups.append(current)
                current = []
            else:
                current.append(word)
        groups.append(current)
        self.cluster.partition(*groups)

    def do_heal(self, args: list[str]) -> None:
        self.cluster.heal()

    def do_crash(self, args: list[str]) -> None:
        self.cluster.crash(args[0])

    def do_restart(self, args: list[str]) -> None:
        self.cluster.restart(args[0])

    def do_propose(self, args: list[str]) -> None:
        node = self.cluster.nodes[NodeId(args[0])]
        for data in args[1:]:
            node.propose(data.encode())
        self.cluster.process(NodeId(args[0]))

    def do_read(self, args: list[str]) -> None:
        self.cluster.nodes[NodeId(args[0])].read_index(int(args[1]))
        self.cluster.process(NodeId(args[0]))

    def do_snapshot(self, args: list[str]) -> None:
        self.cluster.snapshot(args[0], int(args[1]) if len(args) > 1 else None)

    def do_conf(self, args: list[str]) -> None:
        node = NodeId(args[0])
        self.cluster.nodes[node].change_membership(ConfChange(args[1]), NodeId(args[2]))
        self.cluster.process(node)

    def do_transfer(self, args: list[str]) -> None:
        self.cluster.nodes[NodeId(args[0])].transfer_leadership(NodeId(args[1]))
        self.cluster.process(NodeId(args[0]))

    # ---- expectations -----------------------------------------------------------------------

    def do_expect(self, args: list[str]) -> None:
        what, rest = args[0], args[1:]
        if what == "error":
            name, command = rest[0], rest[1:]
            try:
                self.run(command)
            except StalwartError as exc:
                assert type(exc).__name__ == name, f"expected {name}, got {type(exc).__name__}: {exc}"
                return
            raise AssertionError(f"expected {name} from {' '.join(command)}")
        if what == "violation":
            # A safety check (the cluster's State Machine Safety) must fire during the command.
            try:
                self.run(rest)
            except AssertionError as exc:
                assert "committed" in str(exc), exc
                return
            raise AssertionError(f"expected a safety violation from {' '.join(rest)}")
        if what == "leader-in":
            assert self.cluster.leader() in rest, f"leader {self.cluster.leader()} not in {rest}"
            return
        if what == "same-log":
            self._expect_same_log()
            return
        node = self.cluster.nodes[NodeId(rest[0])]
        status, app = node.status(), self.cluster.apps[NodeId(rest[0])]
        values = rest[1:]
        actual: object
        match what:
            case "role":
                actual, wanted = status.role, Role(values[0])
            case "not-role":
                actual, wanted = status.role is Role(values[0]), False
            case "term" | "commit" | "applied" | "last-index" | "snapshot-index" | "first-index":
                actual, wanted = getattr(status, what.replace("-", "_")), int(values[0])
            case "leader" | "vote":
                actual = getattr(status, what)
                wanted = None if values[0] == "none" else values[0]
            case "data":
                actual, wanted = [d.decode() for d in app.state()], values
            case "voters" | "learners":
                actual, wanted = sorted(getattr(status, what)), sorted(values)
            case "read":
                index = node.commit if values[1] == "@commit" else int(values[1])
                actual, wanted = app.reads.get(int(values[0])), index
            case "no-read":
                actual, wanted = int(values[0]) in app.reads or int(values[0]) in app.failed_reads, False
            case "read-failed":
                actual, wanted = int(values[0]) in app.failed_reads, True
            case "progress":
                follower = next(f for f in status.followers if f.node == values[0])
                actual = (follower.state, follower.match, follower.next)
                wanted = (ProgressState(values[1]), int(values[2]), int(values[3]))
            case "lag":
                follower = next(f for f in status.followers if f.node == values[0])
                actual, wanted = follower.lag, int(values[1])
            case _:
                raise ValueError(f"unknown expectation {what!r}")
        assert actual == wanted, f"{what} of {rest[0]}: got {actual!r}, wanted {wanted!r}"

    def _expect_same_log(self) -> None:
        nodes = list(self.cluster.nodes.values())
        hi = min(n.log.last_index for n in nodes)
        lo = max(n.log.snap_index for n in nodes) + 1
        for index in range(lo, hi + 1):
            entries = {n.log.entry(index) for n in nodes}
            assert len(entries) == 1, f"logs differ at {index}: {entries}"
        assert len({n.log.last_index for n in nodes}) == 1, "logs have different lengths"


def run_script(path: pathlib.Path) -> None:
    interp = Interpreter()
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            interp.run(shlex.split(line))
        except AssertionError as exc:
            raise AssertionError(f"{path.name}:{number}: {line}\n  {exc}") from exc


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_scenario(path: pathlib.Path) -> None:
    run_script(path)


def test_there_are_scenarios() -> None:
    names = {p.stem for p in SCRIPTS}
    for required in (
        "election",
        "split_vote",
        "partitioned_leader",
        "log_divergence",
        "snapshot_catchup",
        "membership",
        "leadership_transfer",
        "read_index_partition",
    ):
        assert required in names


def test_a_wrong_expectation_fails(tmp_path: pathlib.Path) -> None:
    # The interpreter must be able to fail: a false expectation is reported with its line.
    script = tmp_path / "bad.txt"
    script.write_text("cluster 1 2 3\ncampaign 1\nstabilize\nexpect role 2 leader\n")
    with pytest.raises(AssertionError, match=r"bad\.txt:4"):
        run_script(script)
