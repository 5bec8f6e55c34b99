"""The replicated register as a state machine, driven by hand (no simulator)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart import wire
from stalwart.errors import DecodeError, NotLeaderError
from stalwart.register import (
    Ack,
    ClientReply,
    ClientRequest,
    Committed,
    Entry,
    Mutation,
    RegisterNode,
    Replicate,
    RequestError,
)
from stalwart.sansio import AppendLog, DurableState, NodeId, apply_storage_ops

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
CLUSTER = (N1, N2, N3)
C = NodeId("c0")


class Harness:
    """Three nodes with perfect disks; messages are delivered only when asked."""

    def __init__(self, mutation: Mutation = Mutation.NONE) -> None:
        self.disks = {n: DurableState() for n in CLUSTER}
        self.nodes = {n: RegisterNode(n, CLUSTER, DurableState(), mutation) for n in CLUSTER}
        self.inflight: list[tuple[NodeId, NodeId, Any]] = []
        self.replies: list[ClientReply] = []
        self.committed: dict[NodeId, list[int]] = {n: [] for n in CLUSTER}

    def flush(self, name: NodeId) -> None:
        node = self.nodes[name]
        while not (ready := node.ready()).is_empty:
            self.disks[name] = apply_storage_ops(self.disks[name], ready.persist)
            self.inflight += [(name, env.to, env.payload) for env in ready.messages]
            for out in ready.outputs:
                if isinstance(out, ClientReply):
                    self.replies.append(out)
                elif isinstance(out, Committed):
                    self.committed[name].append(out.index)
            node.advance(ready)

    def request(self, to: NodeId, rid: int, f: str, value: object = None) -> None:
        args = () if f == "read" else (value,) if f == "write" else value
        self.nodes[to].step(C, ClientRequest(rid, f, args))  # type: ignore[arg-type]
        self.flush(to)

    def deliver_all(self, drop_to: set[NodeId] | None = None) -> None:
        for _ in range(100):
            if not self.inflight:
                return
            batch, self.inflight = self.inflight, []
            for src, dst, msg in batch:
                if drop_to and dst in drop_to:
                    continue
                self.nodes[dst].step(src, msg)
                self.flush(dst)

    def restart(self, name: NodeId) -> None:
        self.nodes[name] = RegisterNode(name, CLUSTER, self.disks[name])
        self.flush(name)


def test_a_write_is_acked_only_after_a_majority_holds_it() -> None:
    h = Harness()
    for n in CLUSTER:
        h.flush(n)
    h.deliver_all()
    h.request(N1, 1, "write", 7)
    assert h.replies == []  # durable on the primary alone: not yet
    h.deliver_all(drop_to={N3})
    assert h.replies == [ClientReply(1, "ok")]
    assert h.nodes[N1].value == 7
    assert h.disks[N2].log == (Entry("write", None, 7, "c0", 1).encode(),)


def test_no_majority_no_ack() -> None:
    h = Harness()
    h.request(N1, 1, "write", 3)
    h.deliver_all(drop_to={N2, N3})
    assert h.replies == []


def test_cas_is_ordered_in_the_log_and_answers_fail_on_a_mismatch() -> None:
    h = Harness()
    h.request(N1, 1, "write", 1)
    h.request(N1, 2, "cas", (2, 3))
    h.request(N1, 3, "cas", (1, 4))
    h.deliver_all()
    assert [(r.request_id, r.outcome) for r in h.replies] == [(1, "ok"), (2, "fail"), (3, "ok")]
    assert h.nodes[N1].value == 4


def test_a_read_waits_for_writes_logged_before_it() -> None:
    h = Harness()
    h.request(N1, 1, "write", 5)
    h.request(N1, 2, "read")
    assert h.replies == []
    h.deliver_all()
    assert h.replies == [ClientReply(1, "ok"), ClientReply(2, "ok", 5)]


def test_backups_refuse_clients_with_the_primary_as_hint() -> None:
    h = Harness()
    with pytest.raises(NotLeaderError) as err:
        h.nodes[N2].step(C, ClientRequest(1, "read"))  # no arguments
    assert err.value.leader_hint == N1


def test_read_from_backup_mutation_answers_stale_values() -> None:
    h = Harness(Mutation.READ_FROM_BACKUP)
    h.request(N1, 1, "write", 9)
    h.deliver_all(drop_to={N3})
    h.request(N3, 2, "read")
    assert h.replies[-1] == ClientReply(2, "ok", None)  # n3 never heard of the write


def test_a_restarted_primary_serves_reads_only_after_recommitting_its_log() -> None:
    h = Harness()
    h.request(N1, 1, "write", 4)
    h.deliver_all()
    h.restart(N1)
    assert h.nodes[N1].commit == 0
    h.request(N1, 2, "read")
    assert h.replies[-1].request_id == 1  # the read is waiting
    h.deliver_all()
    assert h.replies[-1] == ClientReply(2, "ok", 4)


def test_a_lagging_backup_catches_up_on_retry() -> None:
    h = Harness()
    for rid in range(1, 4):
        h.request(N1, rid, "write", rid)
    h.deliver_all(drop_to={N3})
    assert h.disks[N3].log == ()
    for _ in range(5):  # RETRY_TICKS
        h.nodes[N1].tick()
    h.flush(N1)
    h.deliver_all()
    assert len(h.disks[N3].log) == 3
    assert h.nodes[N3].value == 3


def test_duplicated_and_stale_messages_change_nothing() -> None:
    h = Harness()
    h.request(N1, 1, "write", 1)
    copies = list(h.inflight)
    h.deliver_all()
    before = (h.disks[N2], h.nodes[N2].value)
    for src, dst, msg in copies:
        h.nodes[dst].step(src, msg)
        h.flush(dst)
    h.nodes[N2].step(N3, Replicate(1, (b"write ~ 8 c0 9",), 1))  # not from the primary
    h.flush(N2)
    assert (h.disks[N2], h.nodes[N2].value) == before


@pytest.mark.parametrize(
    "request_",
    [
        ClientRequest(1, "write", ("x",)),  # type: ignore[arg-type]
        ClientRequest(1, "write", (None,)),
        ClientRequest(1, "write", ()),
        ClientRequest(1, "read", (1,)),
        ClientRequest(1, "cas", (1,)),
        ClientRequest(1, "cas", (1, 2, 3)),
        ClientRequest(1, "delete"),
        ClientRequest(1, "write", (2**70,)),
        ClientRequest(1, "write", (True,)),
    ],
)
def test_malformed_requests_are_refused_before_any_change(request_: ClientRequest) -> None:
    h = Harness()
    h.flush(N1)
    with pytest.raises(RequestError):
        h.nodes[N1].step(C, request_)
    assert h.nodes[N1].ready().is_empty
    assert h.nodes[N1].last_index == 0


def test_ack_before_fsync_mutation_acks_without_syncing() -> None:
    node = RegisterNode(N1, CLUSTER, DurableState(), Mutation.ACK_BEFORE_FSYNC)
    node.step(C, ClientRequest(1, "write", (2,)))
    ready = node.ready()
    assert not ready.must_sync and isinstance(ready.persist[0], AppendLog)
    assert ClientReply(1, "ok") in ready.outputs


@given(
    f=st.sampled_from(["write", "cas"]),
    old=st.none() | st.integers(-(2**40), 2**40),
    new=st.none() | st.integers(-(2**40), 2**40),
    client=st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
    rid=st.integers(0, 2**40),
)
def test_entries_round_trip(f: str, old: int | None, new: int | None, client: str, rid: int) -> None:
    entry = Entry(f, old, new, client, rid)
    assert Entry.decode(entry.encode()) == entry


@given(st.binary(max_size=40))
def test_garbage_entries_raise_decode_error_only(data: bytes) -> None:
    # Anything but a valid entry or a DecodeError (an IndexError, a UnicodeError) fails the test.
    try:
        entry = Entry.decode(data)
    except DecodeError:
        return
    assert Entry.decode(entry.encode()) == entry


def test_a_node_refuses_to_start_from_an_unreadable_log() -> None:
    with pytest.raises(DecodeError):
        RegisterNode(N2, CLUSTER, DurableState(log=(b"\xff garbage",)))


MESSAGES = [
    ClientRequest(7, "cas", (None, 3)),
    ClientRequest(8, "read"),
    ClientReply(7, "ok", 3, None),
    ClientReply(9, "redirect", None, "n1"),
    Replicate(4, (b"write ~ 1 c0 3", b"cas 1 2 c1 4"), 3),
    Ack(12),
]


@pytest.mark.parametrize("msg", MESSAGES)
def test_messages_round_trip_through_the_wire_codec(msg: object) -> None:
    assert wire.decode(wire.encode(msg)) == msg


def test_the_wire_refuses_oversized_batches_and_values() -> None:
    too_many = Replicate(1, tuple(b"x" for _ in range(65)), 0)
    with pytest.raises(wire.EncodeError):
        wire.encode(too_many)
    with pytest.raises(wire.EncodeError):
        wire.encode(ClientRequest(1, "write", (2**62,)))


def test_acks_from_strangers_are_ignored() -> None:
    node = RegisterNode(N1, CLUSTER, DurableState())
    node.step(NodeId("n9"), Ack(5))
    assert node.commit == 0
