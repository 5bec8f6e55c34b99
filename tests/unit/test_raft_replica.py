"""RaftReplica: the session path end to end over three replicas in memory."""

from __future__ import annotations

import random

import pytest

from stalwart.raft import RaftConfig, Role
from stalwart.raft.replica import ClientRead, ClientReply, ClientWrite, RaftReplica, ReplyStatus
from stalwart.sansio import NodeId

NAMES = [NodeId("a"), NodeId("b"), NodeId("c")]
CLIENT = NodeId("client-1")


class Register:
    def __init__(self) -> None:
        self.value = b""
        self.writes = 0

    def apply(self, payload: bytes) -> bytes:
        self.writes += 1
        self.value = payload
        return b"wrote-%d" % self.writes

    def query(self, query: bytes) -> bytes:
        return self.value

    def snapshot(self) -> bytes:
        return b"%d:" % self.writes + self.value

    def restore(self, data: bytes) -> None:
        count, _, self.value = data.partition(b":")
        self.writes = int(count)


class Net:
    def __init__(self, snapshot_every: int = 1000) -> None:
        self.apps = {n: Register() for n in NAMES}
        self.nodes = {
            n: RaftReplica(
                RaftConfig(node_id=n, voters=frozenset(NAMES)),
                random.Random(i),
                None,
                self.apps[n],
                snapshot_every=snapshot_every,
            )
            for i, n in enumerate(NAMES)
        }
        self.queue: list[tuple[NodeId, NodeId, object]] = []
        self.replies: list[ClientReply] = []

    def pump(self, n: NodeId) -> None:
        while True:
            rd = self.nodes[n].ready()
            if rd.is_empty:
                return
            self.queue += [(n, e.to, e.payload) for e in rd.messages]
            self.replies += [o for o in rd.outputs if isinstance(o, ClientReply)]
            self.nodes[n].advance(rd)

    def settle(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            for n in NAMES:
                self.nodes[n].tick()
                self.pump(n)
            while self.queue:
                src, dst, msg = self.queue.pop(0)
                self.nodes[dst].step(src, msg)  # type: ignore[arg-type]
                self.pump(dst)

    def leader(self) -> NodeId:
        return next(n for n in NAMES if self.nodes[n].raft.role is Role.LEADER)

    def ask(self, n: NodeId, msg: ClientWrite | ClientRead) -> ClientReply:
        before = len(self.replies)
        self.nodes[n].step(CLIENT, msg)
        self.pump(n)
        for _ in range(5):
            if len(self.replies) > before:
                break
            self.settle()
        return self.replies[before]


def elected() -> Net:
    net = Net()
    net.settle(40)
    return net


def test_writes_commit_reads_see_them_and_followers_redirect() -> None:
    net = elected()
    leader = net.leader()
    follower = next(n for n in NAMES if n != leader)
    assert net.ask(leader, ClientWrite(1, b"x")) == ClientReply(CLIENT, 1, ReplyStatus.OK, b"wrote-1")
    redirect = net.ask(follower, ClientWrite(2, b"y"))
    assert (redirect.status, redirect.leader_hint) == (ReplyStatus.REDIRECT, leader)
    assert net.ask(leader, ClientRead(3, b"")).result == b"x"


def test_a_retry_at_a_new_leader_runs_once() -> None:
    net = elected()
    old = net.leader()
    first = net.ask(old, ClientWrite(7, b"x"))
    new = next(n for n in NAMES if n != old)
    net.nodes[old].raft.transfer_leadership(new)
    net.pump(old)
    net.settle(5)
    assert net.leader() == new
    # The client never saw the first reply (say it was lost) and retries the same request.
    again = net.ask(new, ClientWrite(7, b"x"))
    assert again.status is ReplyStatus.OK and again.result == first.result == b"wrote-1"
    assert all(app.writes == 1 for app in net.apps.values())


def test_replicas_snapshot_and_keep_serving() -> None:
    net = Net(snapshot_every=5)
    net.settle(40)
    leader = net.leader()
    for i in range(12):
        assert net.ask(leader, ClientWrite(i + 1, b"v%d" % i)).status is ReplyStatus.OK
    net.settle(2)
    assert all(r.raft.log.snap_index >= 5 for r in net.nodes.values())
    assert net.ask(leader, ClientRead(100, b"")).result == b"v11"


def test_an_overloaded_leader_answers_busy_not_a_redirect_to_itself() -> None:
    from stalwart.raft.replica import MAX_PENDING_WRITES

    net = elected()
    leader = net.leader()
    replica = net.nodes[leader]
    for seq in range(1, MAX_PENDING_WRITES + 1):  # nothing is delivered: none of them commits
        replica.step(NodeId(f"c{seq}"), ClientWrite(1, b"x"))
    net.pump(leader)
    assert net.replies == [], "all pending, none refused"
    replica.step(CLIENT, ClientWrite(1, b"one too many"))
    reads = replica.raft.cfg.max_pending_reads
    for rid in range(reads + 1):
        replica.step(CLIENT, ClientRead(100 + rid, b""))
    net.pump(leader)
    busy = [r for r in net.replies if r.status is ReplyStatus.BUSY]
    assert [(r.client, r.request_id) for r in busy] == [(CLIENT, 1), (CLIENT, 100 + reads)]
    assert all(r.leader_hint == leader for r in busy)
    assert not any(r.status is ReplyStatus.REDIRECT for r in net.replies)
    net.settle(3)  # once the followers hear of them, every pending write commits and answers OK
    ok = [r for r in net.replies if r.status is ReplyStatus.OK and r.client != CLIENT]
    assert len(ok) == MAX_PENDING_WRITES


def test_a_batch_of_writes_is_one_append_and_each_write_is_answered_as_if_alone() -> None:
    from stalwart.raft.replica import ClientWrites

    net = elected()
    leader = net.leader()
    follower = next(n for n in NAMES if n != leader)
    replica = net.nodes[leader]
    last = replica.raft.log.last_index
    batch = [(NodeId(f"c{i}"), 1, 0, b"v%d" % i) for i in range(5)]
    batch.append((NodeId("c0"), 1, 0, b"v0"))  # a resend of c0's write in the same batch
    replica.step(CLIENT, ClientWrites(batch))
    assert replica.raft.log.last_index == last + 5, "proposed together; the resend waits, not proposed"
    net.pump(leader)
    net.settle(3)
    answers = {(r.client, r.request_id): r for r in net.replies}
    assert {c for c, _ in answers} == {NodeId(f"c{i}") for i in range(5)}
    assert all(r.status is ReplyStatus.OK for r in answers.values())
    assert net.apps[leader].writes == 5, "the resend applied once"
    net.replies.clear()
    net.nodes[follower].step(CLIENT, ClientWrites([(NodeId("c9"), 1, 0, b"x")]))
    net.pump(follower)
    assert [(r.status, r.leader_hint) for r in net.replies] == [(ReplyStatus.REDIRECT, leader)]


def test_a_batch_beyond_the_room_left_is_answered_busy_for_the_rest() -> None:
    from stalwart.raft.replica import MAX_PENDING_WRITES, ClientWrites

    net = elected()
    leader = net.leader()
    replica = net.nodes[leader]
    replica.step(CLIENT, ClientWrites([(NodeId(f"c{i}"), 1, 0, b"x") for i in range(MAX_PENDING_WRITES - 2)]))
    net.pump(leader)
    replica.step(CLIENT, ClientWrites([(NodeId(f"d{i}"), 1, 0, b"y") for i in range(5)]))
    net.pump(leader)
    busy = sorted(str(r.client) for r in net.replies if r.status is ReplyStatus.BUSY)
    assert busy == ["d2", "d3", "d4"] and len(net.replies) == 3
    net.settle(3)
    ok = [r for r in net.replies if r.status is ReplyStatus.OK]
    assert len(ok) == MAX_PENDING_WRITES, "everything that found room commits"


@pytest.mark.parametrize("across_batches", [False, True])
def test_a_resent_write_at_the_edge_of_the_room_waits_for_its_first_copy(across_batches: bool) -> None:
    """Two copies of one (client, seq), the second beyond the room: it must not be answered busy
    under the key of the copy that runs (the server hands a key's answer to all its waiters)."""
    from stalwart.raft.replica import MAX_PENDING_WRITES, ClientWrites

    net = elected()
    leader = net.leader()
    replica = net.nodes[leader]
    replica.step(CLIENT, ClientWrites([(NodeId(f"c{i}"), 1, 0, b"x") for i in range(MAX_PENDING_WRITES - 1)]))
    net.pump(leader)
    first, retry = (NodeId("s"), 7, 0, b"first"), (NodeId("s"), 7, 0, b"retry")
    if across_batches:
        replica.step(CLIENT, ClientWrites([first]))
        replica.step(CLIENT, ClientWrites([retry]))
        replica.step(CLIENT, ClientWrite(1, b"no room"))
    else:
        replica.step(CLIENT, ClientWrites([first, retry]))
    net.pump(leader)
    net.settle(3)
    mine = [(r.client, r.request_id, r.status) for r in net.replies if r.client == "s"]
    assert mine == [(NodeId("s"), 7, ReplyStatus.OK)]
    assert net.apps[leader].value == b"first"
    if across_batches:
        assert [r.status for r in net.replies if r.client == CLIENT] == [ReplyStatus.BUSY]


def test_a_snapshot_is_taken_once_the_applied_entries_hold_snapshot_bytes() -> None:
    net = Net(snapshot_every=10**9)
    for replica in net.nodes.values():
        replica.snapshot_bytes = 2_000
    net.settle(40)
    leader = net.leader()
    raft = net.nodes[leader].raft
    assert raft.log.snap_index == 0
    for seq in range(1, 4):
        assert net.ask(leader, ClientWrite(seq, b"x" * 500)).status is ReplyStatus.OK
    assert raft.log.snap_index == 0, "1 500 bytes applied: not yet"
    assert net.ask(leader, ClientWrite(4, b"x" * 600)).status is ReplyStatus.OK
    assert raft.log.snap_index == raft.applied, "past 2 000 bytes: snapshotted and compacted"
