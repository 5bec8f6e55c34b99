"""Client sessions: exactly-once application, deterministic expiry, snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.errors import DecodeError
from stalwart.raft.sessions import (
    Command,
    SessionConfig,
    SessionError,
    Sessions,
    SessionStatus,
    decode_command,
    encode_command,
)


class Counter:
    """A state machine that counts how often it ran: duplicates would show."""

    def __init__(self) -> None:
        self.runs: list[bytes] = []

    def apply(self, payload: bytes) -> bytes:
        self.runs.append(payload)
        return b"r%d" % len(self.runs)

    def snapshot(self) -> bytes:
        return b"\x00".join(self.runs)

    def restore(self, data: bytes) -> None:
        self.runs = data.split(b"\x00") if data else []


def cmd(client: str, seq: int, time_ms: int = 0, payload: bytes = b"p", ack: int = 0) -> bytes:
    return encode_command(Command(client, seq, ack, time_ms, payload))


def test_command_round_trip_and_malformed_input() -> None:
    c = Command("client-1", 7, 3, 99, b"payload")
    assert decode_command(encode_command(c)) == c
    with pytest.raises(DecodeError):
        decode_command(b"\x00\x01")
    with pytest.raises(SessionError):
        encode_command(Command("x" * 300, 1, 0, 0, b""))


def test_a_retried_command_runs_once_and_returns_the_same_response() -> None:
    s = Sessions(Counter())
    first = s.apply(cmd("c", 1))
    again = s.apply(cmd("c", 1))  # a retry committed twice (new leader re-proposed it)
    assert first.status is SessionStatus.APPLIED and again.status is SessionStatus.DUPLICATE
    assert first.response == again.response == b"r1"
    assert s.app.runs == [b"p"]  # type: ignore[attr-defined]


def test_an_old_command_whose_response_was_acknowledged_is_stale() -> None:
    s = Sessions(Counter())
    s.apply(cmd("c", 1))
    s.apply(cmd("c", 2, ack=2))  # the client holds every response below 2: discard 1's
    assert s.apply(cmd("c", 1)).status is SessionStatus.STALE
    assert len(s.app.runs) == 2  # type: ignore[attr-defined]


def test_sessions_expire_by_log_time_and_expired_commands_never_run() -> None:
    s = Sessions(Counter(), SessionConfig(session_timeout_ms=1000))
    s.apply(cmd("old", 1, time_ms=0))
    s.apply(cmd("other", 1, time_ms=1500))  # the cluster clock passes old's expiry
    late = s.apply(cmd("old", 2, time_ms=1600))
    assert late.status is SessionStatus.EXPIRED and late.response is None
    assert s.app.runs == [b"p", b"p"]  # type: ignore[attr-defined]
    # A leader with a slow clock cannot move time back and revive the session.
    assert s.apply(cmd("old", 3, time_ms=10)).status is SessionStatus.EXPIRED
    assert s.time_ms == 1600


def test_the_session_limit_expires_the_least_recently_active() -> None:
    s = Sessions(Counter(), SessionConfig(max_sessions=2))
    s.apply(cmd("a", 1, time_ms=1))
    s.apply(cmd("b", 1, time_ms=2))
    s.apply(cmd("c", 1, time_ms=3))
    assert s.clients == 2
    assert s.apply(cmd("a", 2, time_ms=4)).status is SessionStatus.EXPIRED


def test_bad_limits_and_bad_snapshots_are_refused() -> None:
    with pytest.raises(SessionError):
        SessionConfig(max_sessions=0)
    with pytest.raises(SessionError):
        Sessions(Counter()).restore(b"{not json")


COMMANDS = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 6), st.integers(0, 3000)),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(COMMANDS, st.integers(0, 60))
def test_replicas_agree_and_a_snapshot_changes_nothing(log: list[tuple[str, int, int]], cut: int) -> None:
    # Two replicas apply the same log; one is rebuilt from a snapshot half-way. Every result
    # must be identical (determinism), and no (client, seq) ever runs twice.
    config = SessionConfig(session_timeout_ms=1000, max_responses=4)
    one, two = Sessions(Counter(), config), Sessions(Counter(), config)
    ran: set[tuple[str, int]] = set()
    for i, (client, seq, t) in enumerate(log):
        if i == cut:
            fresh = Sessions(Counter(), config)
            fresh.restore(two.snapshot())
            two = fresh
        data = cmd(client, seq, time_ms=t, payload=b"%s%d" % (client.encode(), seq))
        r1, r2 = one.apply(data), two.apply(data)
        assert r1 == r2
        if r1.status is SessionStatus.APPLIED:
            assert (client, seq) not in ran
            ran.add((client, seq))
    assert one.snapshot() == two.snapshot()


def test_the_older_json_snapshot_format_still_restores() -> None:
    import json

    one = Sessions(Counter())
    for seq in (1, 2):
        one.apply(cmd("a", seq, time_ms=10 * seq, payload=b"x%d" % seq))
    old = json.dumps(
        {
            "time_ms": 20,
            "sessions": {"a": [2, 20, {"1": b"r1".hex(), "2": b"r2".hex()}]},
            "tombstones": ["gone"],
            "app": one.app.snapshot().hex(),
        },
        sort_keys=True,
    ).encode()  # what snapshot() wrote before the binary format
    two = Sessions(Counter())
    two.restore(old)
    assert two.apply(cmd("a", 2, time_ms=30)).status is SessionStatus.DUPLICATE
    assert two.apply(cmd("gone", 1, time_ms=30)).status is SessionStatus.EXPIRED
    assert two.apply(cmd("a", 3, time_ms=30)).status is SessionStatus.APPLIED
    three = Sessions(Counter())
    three.restore(two.snapshot())  # and the binary format round-trips what it read
    assert three.snapshot() == two.snapshot()


@pytest.mark.parametrize(
    "tail", [b"", b"\xc1", b"\x94\x01\x80\x90\x01", b"\x94\x01\x81\xa1a\x93\x01\x01\x80\x90\xa1x"]
)
def test_a_bad_binary_snapshot_is_refused(tail: bytes) -> None:
    from stalwart.raft.sessions import SNAPSHOT_MAGIC

    with pytest.raises(SessionError):
        Sessions(Counter()).restore(SNAPSHOT_MAGIC + tail)
