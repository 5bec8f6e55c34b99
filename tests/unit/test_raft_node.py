"""Unit tests of the pure Raft node: persistence ordering, restart, flow control, fast
backtracking, refusals, status, codecs, and a randomized safety property."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stalwart.errors import ConfigError, DecodeError, NotLeaderError, RemoteProtocolError
from stalwart.raft import (
    HARD_STATE_KEY,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Membership,
    ProgressState,
    ProposalDroppedError,
    RaftConfig,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
    decode_entry,
    encode_entry,
)
from stalwart.raft._types import (
    decode_hard_state,
    decode_membership,
    decode_snapshot,
    encode_hard_state,
    encode_membership,
    encode_snapshot,
)
from stalwart.sansio import AppendLog, DurableState, NodeId, PutMeta, apply_storage_ops
from tests.raft.cluster import Cluster

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def node(name: NodeId = A, **options: object) -> RaftNode:
    cfg = RaftConfig(node_id=name, voters=frozenset({A, B, C}), **options)  # type: ignore[arg-type]
    return RaftNode(cfg, random.Random(1))


def leader_of_three(**options: object) -> tuple[Cluster, RaftNode]:
    c = Cluster(["a", "b", "c"], **options)
    c.campaign("a")
    c.stabilize()
    c.tick_all(1)
    c.stabilize()
    return c, c.nodes[A]


# ---- configuration and codecs ---------------------------------------------------------------


def test_unknown_mutation_and_bad_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown raft mutations"):
        RaftConfig(node_id=A, mutations=frozenset({"no-such-bug"}))
    with pytest.raises(ConfigError):
        RaftConfig(node_id=A, heartbeat_ticks=10, election_ticks=10)
    with pytest.raises(ConfigError):
        RaftConfig(node_id=A, lease_reads=True, check_quorum=False)


@given(st.integers(0, 2**63), st.sampled_from(list(EntryKind)), st.binary(max_size=64))
def test_entry_round_trip(term: int, kind: EntryKind, data: bytes) -> None:
    e = Entry(term, 7, kind, data)
    assert decode_entry(7, encode_entry(e)) == e


@given(st.binary(max_size=40))
def test_decoders_raise_only_decode_error(blob: bytes) -> None:
    for decoder in (
        lambda b: decode_entry(1, b),
        decode_hard_state,
        decode_membership,
        decode_snapshot,
    ):
        with contextlib.suppress(DecodeError):  # anything else escapes and fails the test
            decoder(blob)


def test_hard_state_membership_snapshot_round_trip() -> None:
    assert decode_hard_state(encode_hard_state(5, B)) == (5, B)
    assert decode_hard_state(encode_hard_state(5, None)) == (5, None)
    m = Membership(frozenset({A, B}), frozenset({C}))
    assert decode_membership(encode_membership(m)) == m
    assert decode_snapshot(encode_snapshot(3, m, b"state")) == (3, m, b"state")


# ---- persistence before dependent messages --------------------------------------------------


def test_vote_is_persisted_and_synced_before_the_grant_leaves() -> None:
    n = node(B)
    n.step(A, RequestVote(term=1, last_index=0, last_term=0))
    rd = n.ready()
    grants = [e for e in rd.messages if isinstance(e.payload, RequestVoteResponse)]
    assert grants and grants[0].payload.granted
    assert rd.must_sync
    assert PutMeta(HARD_STATE_KEY, encode_hard_state(1, A)) in rd.persist


def test_vote_not_persisted_mutation_really_drops_the_vote() -> None:
    n = node(B, mutations=frozenset({"vote-not-persisted"}))
    n.step(A, RequestVote(term=1, last_index=0, last_term=0))
    rd = n.ready()
    assert PutMeta(HARD_STATE_KEY, encode_hard_state(1, None)) in rd.persist


def test_appended_entries_are_synced_before_the_ack() -> None:
    n = node(B)
    entries = (Entry(1, 1, EntryKind.NOOP, b""), Entry(1, 2, EntryKind.NORMAL, b"x"))
    n.step(A, AppendEntries(1, 0, 0, entries, 0))
    rd = n.ready()
    assert rd.must_sync
    assert [op for op in rd.persist if isinstance(op, AppendLog)] == [
        AppendLog(1, encode_entry(entries[0])),
        AppendLog(2, encode_entry(entries[1])),
    ]
    acks = [e.payload for e in rd.messages if isinstance(e.payload, AppendEntriesResponse)]
    assert acks == [AppendEntriesResponse(1, True, 2)]
    n2 = node(B, mutations=frozenset({"ack-before-fsync"}))
    n2.step(A, AppendEntries(1, 0, 0, entries, 0))
    assert not n2.ready().must_sync  # the mutation acks from the page cache


def test_restart_from_durable_state_keeps_term_vote_and_log_and_never_votes_twice() -> None:
    n = node(B)
    disk = DurableState()
    n.step(A, RequestVote(term=3, last_index=0, last_term=0))
    rd = n.ready()
    disk = apply_storage_ops(disk, rd.persist)
    n.advance(rd)
    n.step(A, AppendEntries(3, 0, 0, (Entry(3, 1, EntryKind.NORMAL, b"x"),), 0))
    rd = n.ready()
    disk = apply_storage_ops(disk, rd.persist)
    again = RaftNode(n.cfg, random.Random(2), disk)
    assert (again.term, again.vote, again.log.last_index) == (3, A, 1)
    again.step(C, RequestVote(term=3, last_index=5, last_term=3))
    votes = [e.payload for e in again.ready().messages if isinstance(e.payload, RequestVoteResponse)]
    assert votes == [RequestVoteResponse(3, False)]


def test_malformed_peer_messages_are_refused_before_any_change() -> None:
    n = node(B)
    bad = [
        AppendEntries(1, 0, 0, (Entry(1, 5, EntryKind.NORMAL, b"gap"),), 0),
        AppendEntries(1, 0, 0, (Entry(2, 1, EntryKind.NORMAL, b"future term"),), 0),
        AppendEntries(1, -1, 0, (), 0),
    ]
    for msg in bad:
        with pytest.raises(RemoteProtocolError):
            n.step(A, msg)
    assert (n.term, n.log.last_index, n.ready().is_empty) == (0, 0, True)


# ---- elections -----------------------------------------------------------------------------


def test_single_voter_elects_itself_and_commits_alone() -> None:
    cfg = RaftConfig(node_id=A, voters=frozenset({A}))
    n = RaftNode(cfg, random.Random(0))
    for _ in range(30):
        n.tick()
        n.advance(n.ready())
    assert n.role is Role.LEADER
    index = n.propose(b"x")
    n.advance(n.ready())  # persisted: the leader's own ack is the quorum
    assert n.commit == index


def test_stale_log_candidate_is_refused() -> None:
    c, _ = leader_of_three()
    c.nodes[A].propose(b"x")
    c.process(A)
    c.stabilize()
    b = c.nodes[B]
    b.step(C, RequestVote(term=9, last_index=0, last_term=0, transfer=True))
    replies = [e.payload for e in b.ready().messages if isinstance(e.payload, RequestVoteResponse)]
    assert replies == [RequestVoteResponse(9, False)]


def test_prevote_does_not_change_the_receivers_term() -> None:
    c, _ = leader_of_three()
    c.tick_all(30)  # no deliveries: everyone's election timer runs out
    b = c.nodes[B]
    term = b.term
    b.step(C, RequestVote(term=term + 1, last_index=99, last_term=99, pre_vote=True))
    assert b.term == term


def test_check_quorum_leader_steps_down_without_a_majority() -> None:
    c, a = leader_of_three()
    c.partition(["a"], ["b", "c"])
    for _ in range(25):
        c.tick("a")
        c.stabilize()
    assert a.role is Role.FOLLOWER


# ---- replication and flow control ----------------------------------------------------------


def test_inflight_window_limits_unacknowledged_appends() -> None:
    c, a = leader_of_three(max_inflight_msgs=2, max_entries_per_msg=1)
    for i in range(10):
        a.propose(b"%d" % i)
    c.process(A)
    to_b = [m for s, d, m in c.net if d == B and isinstance(m, AppendEntries) and (m.entries or m.packed)]
    assert len(to_b) == 2  # the window is full; the rest waits for acknowledgements
    assert a.status().followers[0].state is ProgressState.REPLICATE
    c.stabilize()
    c.tick_all(1)
    c.stabilize()
    assert c.nodes[B].commit == a.commit == a.log.last_index


def test_probe_state_sends_one_message_at_a_time() -> None:
    c, a = leader_of_three()
    c.crash("b")
    for i in range(3):
        a.propose(b"%d" % i)
        c.process(A)
    c.drop()
    a.progress[B].become_probe()
    a.propose(b"more")
    c.process(A)
    a.propose(b"more2")
    c.process(A)
    to_b = [m for s, d, m in c.net if d == B and isinstance(m, AppendEntries)]
    assert len(to_b) == 1  # probing: paused until an answer or a heartbeat


def test_fast_backtracking_skips_a_whole_conflicting_term() -> None:
    c, a = leader_of_three()
    c.partition(["a"], ["b", "c"])
    for i in range(30):
        a.propose(b"old%d" % i)  # 30 entries of term 1 that only a holds
    c.process(A)
    c.stabilize()
    for _ in range(60):
        c.tick("b")
        c.tick("c")
        c.stabilize()
    leader = c.leader()
    assert leader in (B, C)
    for i in range(40):
        c.nodes[leader].propose(b"new%d" % i)  # a longer log of a newer term
    c.process(leader)
    c.stabilize()
    other = B if leader == C else C
    c.nodes[leader].transfer_leadership(other)  # a new leader starts optimistic: next = last + 1
    c.process(leader)
    for _ in range(3):
        c.tick("b")
        c.tick("c")
        c.stabilize()
    assert c.leader() == other
    rejects = []
    c.heal()
    for _ in range(5):
        c.tick_all(1)
        while c.net:
            rejects += [m for s, _, m in c.net if s == A and isinstance(m, AppendEntriesResponse)]
            c.deliver()
    rejects = [m for m in rejects if not m.success and m.index > 0]
    # Without hints this takes ~40 round trips; with them: one for "your log is shorter"
    # (hint_index = its last + 1) and one naming the conflicting term 1, skipped at once.
    assert len(rejects) == 2, rejects
    assert rejects[0].hint_term == 0 and rejects[1].hint_term == 1
    assert [d for _, d in c.apps[A].applied][-1] == b"new39"


def test_refusals_raise_typed_errors_before_changing_anything() -> None:
    c, a = leader_of_three(max_uncommitted_entries=3)
    with pytest.raises(NotLeaderError) as info:
        c.nodes[B].propose(b"x")
    assert info.value.leader_hint == A
    last = a.log.last_index
    with pytest.raises(ProposalDroppedError):
        a.propose_batch([b"1", b"2", b"3", b"4"])
    assert a.log.last_index == last


def test_status_reports_role_terms_and_follower_lag() -> None:
    c, a = leader_of_three()
    c.crash("c")
    a.propose(b"x")
    c.process(A)
    c.stabilize()
    c.tick_all(1)
    c.stabilize()
    st_ = a.status()
    assert (st_.role, st_.term, st_.leader, st_.commit, st_.applied) == (Role.LEADER, 1, A, 2, 2)
    lag = {f.node: f.lag for f in st_.followers}
    assert lag == {B: 0, C: 1}  # c holds the no-op, not x


def test_pending_reads_fail_when_leadership_is_lost() -> None:
    c, a = leader_of_three()
    c.partition(["a"], ["b", "c"])
    a.read_index(5)
    c.process(A)
    for _ in range(25):
        c.tick("a")
        c.stabilize()
    assert 5 in c.apps[A].failed_reads and 5 not in c.apps[A].reads


def _settled_leader(**options: object) -> tuple[Cluster, RaftNode]:
    """A leader of three whose no-op committed and whose last heartbeat round a quorum acked."""
    c = Cluster(["a", "b", "c"], **options)
    for _ in range(80):
        c.tick_all(1)
        c.stabilize()
        lead = c.leader()
        if lead is None or c.nodes[lead].commit < 1:
            continue
        if not c.nodes[lead].cfg.lease_reads or c.nodes[lead].lease_valid(True):
            return c, c.nodes[lead]
    raise AssertionError("no settled leader")


def _answered_at_once(c: Cluster, leader: RaftNode, ctx: int, lease: bool | None) -> bool:
    """Ask for read ``ctx``; True if it is ready before any message is delivered (no round)."""
    leader.read_index(ctx, lease=lease)
    c.process(leader.id)
    at_once = ctx in c.apps[leader.id].reads
    c.stabilize()
    assert ctx in c.apps[leader.id].reads, "every read is answered once a quorum confirms"
    return at_once


def test_a_per_call_lease_read_uses_the_lease_only_where_the_config_allows_it() -> None:
    c, leader = _settled_leader(lease_reads=True)
    assert leader.lease_valid(True) and not leader.lease_valid(False)
    assert _answered_at_once(c, leader, 1, lease=True), "inside the lease: no heartbeat round"
    assert not _answered_at_once(c, leader, 2, lease=False), "this call asked for ReadIndex"
    assert _answered_at_once(c, leader, 3, lease=None), "None follows the config (lease_reads)"
    # Without lease_reads (so without the restart vote guard) a lease request is a ReadIndex.
    c, leader = _settled_leader()
    assert not leader.lease_valid(True)
    assert not _answered_at_once(c, leader, 4, lease=True)
    # The lease runs out on the leader's own clock when no quorum acknowledges a round.
    c, leader = _settled_leader(lease_reads=True)
    others = [str(n) for n in c.ids if n != leader.id]
    c.partition([str(leader.id)], others)
    c.tick(str(leader.id), leader.cfg.lease_ticks + 1)
    c.process(leader.id)
    assert leader.role is Role.LEADER and not leader.lease_valid(True)
    leader.read_index(5, lease=True)
    c.process(leader.id)
    c.stabilize()
    assert 5 not in c.apps[leader.id].reads


# ---- a randomized safety property ------------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(st.sampled_from(["tick", "deliver", "drop", "propose", "crash", "partition", "heal"]),
              st.integers(0, 2)),
    min_size=20,
    max_size=150,
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS, st.integers(0, 1000))
def test_random_faults_never_break_safety(actions: list[tuple[str, int]], seed: int) -> None:
    # The cluster asserts State Machine Safety on every applied entry and Election Safety in
    # leader(); the nodes assert their own invariants after every step.
    c = Cluster(["a", "b", "c"], seed=seed, election_ticks=4, max_entries_per_msg=2)
    names = ["a", "b", "c"]
    down: set[str] = set()
    for what, k in actions:
        name = names[k]
        match what:
            case "tick":
                c.tick_all(1)
            case "deliver":
                c.deliver(limit=5)
            case "drop":
                c.drop(dst=name)
            case "propose":
                leader = c.leader()
                if leader is not None:
                    c.nodes[leader].propose(b"v%d" % len(c.committed))
                    c.process(leader)
            case "crash":
                if name in down:
                    c.restart(name)
                    down.discard(name)
                elif not down:
                    c.crash(name)
                    down.add(name)
            case "partition":
                c.partition([name], [n for n in names if n != name])
            case "heal":
                c.heal()
    c.heal()
    for name in list(down):
        c.restart(name)
    for _ in range(60):
        c.tick_all(1)
        c.stabilize()
    leader = c.leader()
    assert leader is not None  # liveness once healed
    c.nodes[leader].propose(b"final")
    c.process(leader)
    for _ in range(3):
        c.tick_all(1)
        c.stabilize()
    assert all(n.commit == c.nodes[leader].commit for n in c.nodes.values())


def test_packed_entries_are_unpacked_and_checked_like_entries() -> None:
    from stalwart.raft._types import pack_entries, unpack_entries

    entries = (Entry(1, 1, EntryKind.NOOP, b""), Entry(1, 2, EntryKind.NORMAL, b"x" * 300))
    blob = pack_entries(entries)
    assert unpack_entries(1, blob) == entries and unpack_entries(1, b"") == ()
    for bad in (blob[:-1], blob[:5], blob[:8] + b"\x07" + blob[9:]):
        with pytest.raises(DecodeError):
            unpack_entries(1, bad)
    with pytest.raises(DecodeError, match="unknown kind"):
        unpack_entries(1, pack_entries([Entry(1, 1, EntryKind.NORMAL, b"")])[:8] + b"\x09" + b"\0" * 4)
    n = node(B)
    n.step(A, AppendEntries(1, 0, 0, (), 0, blob))
    assert n.log.last_index == 2 and n.log.entry(2) == entries[1]
    n2 = node(B)
    for bad_msg in (
        AppendEntries(1, 0, 0, (), 0, blob[:-1]),  # truncated
        AppendEntries(1, 0, 0, entries, 0, blob),  # both forms at once
        AppendEntries(1, 0, 0, (), 0, pack_entries([Entry(2, 1, EntryKind.NORMAL, b"x")])),  # future term
    ):
        with pytest.raises(RemoteProtocolError):
            n2.step(A, bad_msg)
    assert n2.log.last_index == 0 and n2.term == 0, "refused before anything changed"
