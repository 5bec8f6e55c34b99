"""The blocking wrapper's thread machinery without a server: thread groups, latches, the
synchronous RESP connection's framing and limits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from stalwart.lock import BackendProtocolError, BackendUnavailable
from stalwart.lock._fastsync import _release_reply
from stalwart.lock._resp import MAX_REPLY_BYTES
from stalwart.lock._syncresp import NoScript, SyncPool
from stalwart.lock._waker import Latch, ThreadGroup, ThreadWaiter, Waiter, Waker


def test_latch_set_twice_wait_keeps_it_set_clear_clears() -> None:
    latch = Latch()
    assert not latch.is_set() and not latch.wait(0.01)
    latch.set()
    latch.set()  # two wakers racing: no error
    assert latch.is_set() and latch.wait(1) and latch.is_set()  # waiting does not consume it
    latch.clear()
    assert not latch.is_set()
    threading.Timer(0.05, latch.set).start()
    t0 = time.monotonic()
    assert latch.wait(5) and time.monotonic() - t0 < 2


def test_thread_group_routes_wake_ups_to_its_threads() -> None:
    """One entry of the waker stands for every waiting thread of the process; messages reach the
    right thread: a hand-over its ticket's thread (with the token), "1" the longest-waiting idle
    thread, "*" all of them; a broken subscriber detaches the group and wakes everyone."""

    async def body() -> None:
        waker = Waker(None, 1.0)
        channel = b"stalwart:lock:{n}:wake"
        group = ThreadGroup(channel)
        group.attached = True
        task_waiter = Waiter(channel, b"task")
        waker._waiters[channel] = {group: None, task_waiter: None}
        p = group.prefix.encode()
        a, b, c = ThreadWaiter(p + b"ta"), ThreadWaiter(p + b"tb"), ThreadWaiter(None)
        for w in (a, b, c):
            assert group.join(w)
        waker._deliver(channel, p + b"tb 42")
        assert b.grant == (42, None) and b.latch.is_set()
        assert a.grant is None and not a.latch.is_set() and not task_waiter.event.is_set()
        waker._deliver(channel, b"task 43")  # another waiter's hand-over: no thread woken
        assert task_waiter.token == 43 and not a.latch.is_set() and not c.latch.is_set()
        waker._deliver(channel, b"1")
        assert a.latch.is_set() and not c.latch.is_set()  # the oldest idle one (b is awake)
        waker._deliver(channel, b"1")
        assert c.latch.is_set()
        for w in (a, b, c):
            w.latch.clear()
        waker._deliver(channel, p + b"ta")  # a ticket without a token: just that one
        assert [w.latch.is_set() for w in (a, b, c)] == [True, False, False]
        waker._deliver(channel, b"*")
        assert all(w.latch.is_set() for w in (a, b, c))
        for w in (a, b, c):
            w.latch.clear()
        waker._on_close(ConnectionError())
        assert not group.attached and all(w.latch.is_set() for w in (a, b, c))
        assert not group.leave(a) and not group.leave(b)
        assert not group.leave(c)  # last one out of a detached group: nothing to detach
        assert p + b"ta" not in group.tickets and not group.threads

    asyncio.run(body())


def test_leaving_an_attached_group_last_asks_for_a_detach() -> None:
    group = ThreadGroup(b"c")
    a, b = ThreadWaiter(b"a"), ThreadWaiter(None)
    assert not group.join(a)  # not attached yet: the first thread attaches it
    group.attached = True
    assert group.join(b)
    assert not group.leave(a)
    assert group.leave(b)


@pytest.mark.parametrize(
    "reply",
    [1, [1, 2], [1, 2, "x"], [1, b"2", b"x"], [True, 2, b"x"], None],
)
def test_release_reply_shape_is_checked(reply: object) -> None:
    with pytest.raises(BackendProtocolError):
        _release_reply(reply)


def test_release_reply() -> None:
    assert _release_reply([1, 7, b"t1:x.5000"]) == (True, 7, b"t1:x.5000")
    assert _release_reply([0, 0, b""]) == (False, 0, b"")


class _Server:
    """A socketpair standing in for the server: the test writes what the server "answers"."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.pool = SyncPool("redis://127.0.0.1:1/0", op_timeout_s=0.3, connect_timeout_s=0.3)
        self.pool._idle.append(self.ours)
        self.ours.settimeout(0.3)

    def answer(self, reply: bytes | None) -> None:
        """Answer the next request with ``reply`` (b"": close; None: stay silent), in a thread:
        bytes already waiting on an idle connection would make the pool drop it unused."""

        def respond() -> None:
            with contextlib.suppress(OSError):
                self.theirs.recv(1024)
                if reply == b"":
                    self.theirs.close()
                elif reply is not None:
                    self.theirs.sendall(reply)

        threading.Thread(target=respond, daemon=True).start()

    def close(self) -> None:
        self.theirs.close()
        self.pool.close()


def test_sync_reply_in_pieces_is_reassembled() -> None:
    server = _Server()
    try:
        reply = b"*3\r\n:1\r\n:7\r\n$9\r\nt1:x.5000\r\n"

        def answer() -> None:
            server.theirs.recv(1024)
            for i in range(0, len(reply), 5):
                server.theirs.sendall(reply[i : i + 5])
                time.sleep(0.01)

        threading.Thread(target=answer).start()
        assert server.pool.call(b"*1\r\n$4\r\nPING\r\n") == [1, 7, b"t1:x.5000"]
        assert server.pool._idle == [server.ours]  # healthy: back in the pool
    finally:
        server.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b":1\r\n:2\r\n", BackendProtocolError),  # a reply nobody asked for
        (b"?garbage\r\n", BackendProtocolError),
        (b"", BackendUnavailable),  # closed by the server
        (None, BackendUnavailable),  # silent
        (b"$%d\r\n" % (MAX_REPLY_BYTES + 1), BackendProtocolError),
    ],
)
def test_sync_bad_replies_are_typed_and_the_connection_dropped(answer: bytes | None, error: type) -> None:
    server = _Server()
    try:
        server.answer(answer)
        t0 = time.monotonic()
        with pytest.raises(error):
            server.pool.call(b"*1\r\n$4\r\nPING\r\n")
        assert time.monotonic() - t0 < 2
        assert server.pool._idle == [] and server.ours.fileno() == -1
    finally:
        server.close()


def test_sync_partial_reply_over_the_limit_breaks_the_connection() -> None:
    server = _Server()
    try:

        def flood() -> None:
            chunk = b"x" * 65536
            try:
                server.theirs.recv(1024)
                server.theirs.sendall(b"$%d\r\n" % MAX_REPLY_BYTES)
                for _ in range(MAX_REPLY_BYTES // len(chunk) + 4):
                    server.theirs.sendall(chunk)
            except OSError:
                pass  # the client closed its end, as it should

        threading.Thread(target=flood, daemon=True).start()
        with pytest.raises((BackendProtocolError, BackendUnavailable)):
            server.pool.call(b"*1\r\n$4\r\nPING\r\n")
        assert server.pool._idle == []
    finally:
        server.close()


def test_sync_error_replies() -> None:
    server = _Server()
    try:
        server.answer(b"-NOSCRIPT No matching script.\r\n")
        with pytest.raises(NoScript):
            server.pool.call(b"*1\r\n$4\r\nPING\r\n")
        assert server.pool._idle == [server.ours]  # in sync: kept
        server.answer(b"-ERR wrong\r\n")
        with pytest.raises(BackendProtocolError):
            server.pool.call(b"*1\r\n$4\r\nPING\r\n")
        assert server.pool._idle == [server.ours]
    finally:
        server.close()


def test_claim_passes_on_only_known_orphans() -> None:
    """A hand-over to a ticket of the group goes to its waiting thread; to an orphan (its thread
    gave up without withdrawing it) it is passed on, once; to an unknown ticket (its thread took
    the lock by itself and left) nothing happens: that lock is held."""
    group = ThreadGroup(b"c")
    passed: list[bytes] = []
    group.on_orphan = passed.append
    p = group.prefix.encode()
    live, gone, done = ThreadWaiter(p + b"live"), ThreadWaiter(p + b"gone"), ThreadWaiter(p + b"done")
    for w in (live, gone, done):
        group.join(w)
    group.leave(gone, orphaned=True)
    group.leave(done)
    assert group.claim(p + b"live") is live
    group.hand_over(p + b"done", 5)
    group.hand_over(b"other-process", 6)
    assert passed == []
    group.hand_over(p + b"gone", 7)
    assert passed == [p + b"gone"]
    assert group.claim(p + b"gone") is False  # forgotten once claimed
    group.hand_over(p + b"live", 8)
    assert live.take_grant() == (8, None)


def test_orphans_are_bounded() -> None:
    from stalwart.lock._waker import MAX_ORPHANS

    group = ThreadGroup(b"c")
    for i in range(MAX_ORPHANS + 10):
        w = ThreadWaiter(b"t%d" % i)
        group.join(w)
        group.leave(w, orphaned=True)
    assert len(group.orphans) == MAX_ORPHANS and b"t0" not in group.orphans


def test_a_one_from_a_group_wakes_everyone_but_that_group() -> None:
    async def body() -> None:
        waker = Waker(None, 1.0)
        channel = b"stalwart:lock:{n}:wake"
        ours, theirs = ThreadGroup(channel), ThreadGroup(channel)
        task_waiter = Waiter(channel, None)
        waker._waiters[channel] = {ours: None, theirs: None, task_waiter: None}
        a, b = ThreadWaiter(None), ThreadWaiter(None)
        ours.join(a)
        theirs.join(b)
        waker._deliver(channel, b"1:" + ours.prefix.encode())
        assert not a.latch.is_set() and b.latch.is_set() and not task_waiter.event.is_set()
        waker._deliver(channel, b"1:" + ours.prefix.encode())  # theirs is awake: the next one
        assert not a.latch.is_set() and task_waiter.event.is_set()
        waker._deliver(channel, b"1")
        assert a.latch.is_set()

    asyncio.run(body())


@pytest.mark.parametrize("how", ["closed", "stray bytes"])
def test_sync_pool_skips_an_idle_connection_that_is_closed_or_out_of_sync(how: str) -> None:
    """Checked out, the newest idle connection turns out dead (the server closed it while it sat
    idle) or carries bytes nobody asked for: it is closed unused, and the call (an acquire is
    never sent twice) goes out on the next idle one."""
    server = _Server()
    dead, dead_peer = socket.socketpair()
    try:
        server.pool._idle.append(dead)  # checked out first (the newest)
        if how == "closed":
            dead_peer.close()
        else:
            dead_peer.sendall(b":1\r\n")
        server.answer(b"+PONG\r\n")
        assert server.pool.call(b"*1\r\n$4\r\nPING\r\n") == b"PONG"
        assert dead.fileno() == -1
        assert server.pool._idle == [server.ours]
    finally:
        dead_peer.close()
        server.close()


def test_sync_reply_in_pieces_is_bounded_by_op_timeout_in_all() -> None:
    """A reply whose first piece comes late and whose rest never does fails op_timeout_s (0.3 s)
    after the read started, not op_timeout_s after the first piece (0.25 + 0.3 s before)."""
    server = _Server()
    try:

        def answer() -> None:
            with contextlib.suppress(OSError):
                server.theirs.recv(1024)
                time.sleep(0.25)
                server.theirs.sendall(b"*3\r\n:1\r\n")  # and nothing more

        threading.Thread(target=answer, daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable):
            server.pool.call(b"*1\r\n$4\r\nPING\r\n")
        assert time.monotonic() - t0 < 0.45
    finally:
        server.close()
