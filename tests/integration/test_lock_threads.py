"""The blocking RedisLock used from threads: fair hand-offs inside a process and across
processes, holders that crash or pause past their TTL, interrupts, the synchronous connections."""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from typing import Any

import pytest
import redis as redis_sync

from stalwart.lock import (
    BackendProtocolError,
    BackendUnavailable,
    BlockingLock,
    LockError,
    LockTimeout,
    RedisLock,
)
from stalwart.lock._waker import ThreadGroup
from tests.integration._locks import contend_threads, spawn, url
from tests.integration.test_lock_faults import fake_server
from tests.servers.redis import RedisServer, redis_server, redis_server_fn

pytestmark = pytest.mark.integration


def _client(url: str) -> redis_sync.Redis:
    return redis_sync.Redis.from_url(url)


def _wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _leaves_nothing(lock: BlockingLock, url: str, extra: tuple[str, ...] = ()) -> None:
    fast = lock._fast
    assert fast is not None
    _wait_for(lambda: fast.backend.watchdog.leases == 0 and not fast.backend.waker.active)
    assert not fast.backend.watchdog.running and not fast.group.threads
    base = f"stalwart:lock:{{{lock.lock.name}}}"  # type: ignore[attr-defined]
    client = _client(url)
    try:
        assert sorted(client.keys("*")) == sorted(k.encode() for k in (f"{base}:fence", *extra))
        assert client.pubsub_numsub(f"{base}:wake") == [(f"{base}:wake".encode(), 0)]
    finally:
        client.close()


@pytest.mark.parametrize("fair", [True, False])
def test_threads_take_turns_and_wake_each_other_directly(url: str, fair: bool) -> None:
    """Six threads hammer a lock for a second: every one gets its turn, tokens increase in the
    holders' order, no update is lost. Fair: every hand-off went from the releasing thread to the
    next one directly (the releases published nothing: the loop was not involved). Unfair: the
    releasing thread wakes the next one itself, lets it try first instead of racing it, and its
    "1" carries its group, so its own subscriber does not wake a second thread."""
    client = _client(url)
    client.config_resetstat()
    lock = BlockingLock(RedisLock(url, f"turns-{fair}", ttl=10.0, fair=fair))
    fast_holder = lock.acquire()
    fast = lock._fast
    assert fast is not None
    fast_holder.release()
    woken: list[int] = []
    skipped: list[int] = []
    wake_one, wake_next = ThreadGroup.wake_one, ThreadGroup.wake_next

    def counting(group: ThreadGroup, origin: bytes = b"") -> bool:
        if origin:  # a message from a release of a thread group (ours: skipped)
            woke = wake_one(group, origin)
            skipped.append(woke)
            return woke
        return wake_one(group, origin)

    def counting_next(group: ThreadGroup, *, pending: bool = False) -> Any:
        woke = wake_next(group, pending=pending)  # the releasing thread's own wake-up
        woken.append(woke is not None)
        return woke

    ThreadGroup.wake_one = counting  # type: ignore[method-assign]
    ThreadGroup.wake_next = counting_next  # type: ignore[method-assign]
    order: list[tuple[int, int]] = []
    shared = {"value": 0}
    stop = time.monotonic() + 1.0

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            with lock as held:
                order.append((held.token, i))
                value = shared["value"]
                time.sleep(0)  # let the other threads run between the read and the write
                shared["value"] = value + 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        ThreadGroup.wake_one = wake_one  # type: ignore[method-assign]
        ThreadGroup.wake_next = wake_next  # type: ignore[method-assign]
    tokens = [t for t, _ in order]
    assert shared["value"] == len(order) > 60
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    counts = [sum(1 for _, i in order if i == w) for w in range(6)]
    assert min(counts) >= 0.7 * (len(order) / 6), counts  # nobody starves
    stats = client.info("commandstats")
    client.close()
    if fair:
        assert "cmdstat_publish" not in stats, stats.get("cmdstat_publish")
    else:  # every release published (for other processes), and our subscriber skipped them
        assert stats["cmdstat_publish"]["calls"] >= len(order) - 1
        assert len(woken) >= len(order) / 2 and len(skipped) >= len(order) / 2
        assert not any(skipped), "our own release's message woke a second thread"
    _leaves_nothing(lock, url)


@pytest.mark.parametrize("fair", [True, False])
def test_threads_of_three_processes_share_a_lock(url: str, fair: bool) -> None:
    """Three threads in each of three processes: mutual exclusion and strictly increasing tokens
    across processes; fair, every process served all along (no process starves while the others
    hand the lock around among their own threads); and wake-ups between processes arrive by
    message (fair: the hand-over; unfair: the "1:<group>" a thread's release publishes, which only
    its own group skips): a poll per hand-off would take minutes."""
    rounds = 30
    mode = "fair" if fair else "unfair"
    children = [spawn("child_threads_main", [url, "xproc", f"p{i}", "3", str(rounds), mode]) for i in (1, 2)]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        contend_threads(url, "xproc", "p0", 3, rounds, fair)
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "done"
            assert child.wait(30) == 0
        elapsed = time.monotonic() - t0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    client = _client(url)
    try:
        total = 9 * rounds
        assert int(client.get("count") or 0) == total
        order = [entry.decode().split() for entry in client.lrange("order", 0, -1)]
    finally:
        client.close()
    tokens = [int(t) for t, _ in order]
    assert len(order) == total and tokens == sorted(tokens) and len(set(tokens)) == total
    # While all three were still running (up to the first process's last acquisition), each got
    # a fair part of the turns.
    last = {tag: max(i for i, (_, t) in enumerate(order) if t == tag) for tag in ("p0", "p1", "p2")}
    window = order[: min(last.values()) + 1]
    shares = [sum(1 for _, t in window if t == tag) / (len(window) / 3) for tag in ("p0", "p1", "p2")]
    assert min(shares) >= 0.5 or not fair, shares
    assert elapsed < 20, f"{total} acquisitions took {elapsed:.1f} s"


def _holder_child(url: str, name: str, ttl: float) -> tuple[Any, int]:
    child = spawn("child_holder_main", [url, name, str(ttl)])
    assert child.stdout is not None
    return child, json.loads(child.stdout.readline())["token"]


def test_waiting_threads_take_over_from_a_holder_that_crashed(url: str) -> None:
    """The holder (another process) is killed: its lease lapses, the head thread takes the free
    lock at its next try (bounded by the holder's remaining TTL), and the others follow by
    direct hand-offs."""
    child, first = _holder_child(url, "crash", 0.6)
    lock = BlockingLock(RedisLock(url, "crash", ttl=10.0, fair=True))
    got: list[tuple[int, float]] = []
    threads = []
    try:
        t0 = time.monotonic()

        def worker() -> None:
            held = lock.acquire(timeout=10)
            got.append((held.token, time.monotonic() - t0))
            held.release()

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        child.kill()
        child.wait(10)
        for t in threads:
            t.join(15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    tokens = [t for t, _ in got]
    assert len(got) == 3 and tokens == sorted(tokens) and tokens[0] > first
    assert got[-1][1] < 3.0, got  # the lease (0.6 s) plus a poll or two, not a stall
    _leaves_nothing(lock, url)


def test_a_holder_paused_past_its_ttl_cannot_disturb_the_next_holder_or_the_queue(url: str) -> None:
    """A holder process is frozen past its lease; a waiting thread takes the lock, two more
    queue behind it. The old holder resumes and releases: its release finds the lock not its own
    (its lease is reported lost) and changes nothing: the current holder keeps the key, and the
    queued threads are then handed the lock in order, with higher tokens."""
    child, first = _holder_child(url, "paused", 0.6)
    lock = BlockingLock(RedisLock(url, "paused", ttl=10.0, fair=True))
    key = "stalwart:lock:{paused}"
    client = _client(url)
    got: list[int] = []
    holding = threading.Event()
    proceed = threading.Event()

    def first_waiter() -> None:
        held = lock.acquire(timeout=10)
        got.append(held.token)
        holding.set()
        proceed.wait(10)
        assert client.get(key) == held.held.owner.encode()  # still ours after the late release
        held.ensure()
        held.release()

    def later_waiter() -> None:
        held = lock.acquire(timeout=10)
        got.append(held.token)
        held.release()

    threads = [threading.Thread(target=first_waiter)]
    try:
        os.kill(child.pid, signal.SIGSTOP)
        threads[0].start()
        assert holding.wait(5), "the frozen holder's lease did not lapse"
        threads += [threading.Thread(target=later_waiter) for _ in range(2)]
        for t in threads[1:]:
            t.start()
        _wait_for(lambda: client.zcard(f"{key}:q") == 2)
        os.kill(child.pid, signal.SIGCONT)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("release\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
        assert report["lost"] is True and report["ensure"].startswith("lost"), report
        assert client.zcard(f"{key}:q") == 2, "the stale release touched the queue"
        proceed.set()
        for t in threads:
            t.join(10)
        assert child.wait(10) == 0
    finally:
        proceed.set()
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait(10)
        client.close()
    assert len(got) == 3 and got == sorted(got) and got[0] > first
    _leaves_nothing(lock, url)


def test_an_orphaned_ticket_at_the_head_is_passed_on_at_once(url: str) -> None:
    """A waiting thread gives up but its clean-up fails (here: made to fail), so its ticket stays
    queued. The release hands the lock to that ticket and learns it is one of ours (no message is
    published for our own tickets): nobody will ever take it, so the release passes it on at once
    instead of letting the lock stall for the 3 s hand-over lease."""
    lock = BlockingLock(RedisLock(url, "ghost", ttl=10.0, fair=True, waiter_ttl_s=3.0))
    holder = lock.acquire()
    fast = lock._fast
    assert fast is not None
    abandon = fast._abandon
    fast._abandon = lambda owner, withdraw=True: False  # type: ignore[method-assign,misc]
    with pytest.raises(LockTimeout):
        lock.acquire(timeout=0.3)
    fast._abandon = abandon  # type: ignore[method-assign]
    assert len(fast.group.orphans) == 1
    result: list[tuple[int, float]] = []

    def waiter() -> None:
        held = lock.acquire(timeout=10)
        result.append((held.token, time.monotonic()))
        held.release()

    t = threading.Thread(target=waiter)
    t.start()
    client = _client(url)
    try:
        _wait_for(lambda: client.zcard("stalwart:lock:{ghost}:q") == 2)
    finally:
        client.close()
    t0 = time.monotonic()
    holder.release()
    t.join(10)
    assert result and result[0][1] - t0 < 1.0, "stalled for the orphaned ticket's hand-over lease"
    assert result[0][0] == holder.token + 2  # the orphan's hand-over took one token
    assert not fast.group.orphans
    _leaves_nothing(lock, url)


def test_a_waiter_that_took_its_hand_over_by_itself_keeps_the_lock(url: str) -> None:
    """The releasing thread hands the lock to a waiter of its group, but before it gets to wake
    that waiter, the waiter's own try (a poll) finds the lock handed over, takes it and leaves the
    group. The releaser must not mistake the now unknown ticket for an orphan and pass on a lock
    that is held (it did, before tickets were claimed: a second holder inside the lease)."""
    lock = BlockingLock(RedisLock(url, "self-taken", ttl=10.0, fair=True))
    key = "stalwart:lock:{self-taken}"
    holder = lock.acquire()
    fast = lock._fast
    assert fast is not None
    got: list[Any] = []
    took = threading.Event()

    def waiter() -> None:
        got.append(lock.acquire(timeout=10))
        took.set()

    t = threading.Thread(target=waiter)
    t.start()
    client = _client(url)
    _wait_for(lambda: client.zcard(f"{key}:q") == 1)
    hand_on = fast._hand_on

    def late(reply: Any, sent_at: float) -> bool:
        # The hand-over has happened on the server; the waiter wakes (as its poll would) first.
        for w in fast.group.snapshot():
            w.latch.set()
        assert took.wait(5)
        return hand_on(reply, sent_at)

    fast._hand_on = late  # type: ignore[method-assign]
    try:
        holder.release()
    finally:
        fast._hand_on = hand_on  # type: ignore[method-assign]
    t.join(5)
    held = got[0]
    try:
        assert client.get(key) == held.held.owner.encode(), "the held lock was passed on"
        held.ensure()
        assert held.token == holder.token + 1
    finally:
        held.release()
        client.close()
    _leaves_nothing(lock, url)


class _Interrupted(Exception):
    pass


def test_a_thread_wait_interrupted_by_a_signal_withdraws_its_ticket(url: str) -> None:
    """The main thread waits in its thread group (others already wait) and a signal handler
    raises: it leaves the queue at once, so the next release goes to the thread behind it."""
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    lock = BlockingLock(RedisLock(url, "interrupted", ttl=10.0, fair=True))
    key = "stalwart:lock:{interrupted}"
    holder = lock.acquire()
    client = _client(url)
    got: list[float] = []

    def waiter() -> None:
        held = lock.acquire(timeout=10)
        got.append(time.monotonic())
        held.release()

    def handler(signum: int, frame: object) -> None:
        raise _Interrupted

    first = threading.Thread(target=waiter)
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        first.start()
        _wait_for(lambda: client.zcard(f"{key}:q") == 1)
        timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGUSR1))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(_Interrupted):
            lock.acquire(timeout=10)
        assert time.monotonic() - t0 < 2.0
        assert client.zcard(f"{key}:q") == 1, "the interrupted waiter is still queued"
        second = threading.Thread(target=waiter)
        second.start()
        _wait_for(lambda: client.zcard(f"{key}:q") == 2)
        t1 = time.monotonic()
        holder.release()
        first.join(10)
        second.join(10)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        client.close()
    assert len(got) == 2 and got[0] - t1 < 1.0
    _leaves_nothing(lock, url, (f"{key}:qw",))  # the withdrawn ticket, expiring


@pytest.mark.parametrize(
    ("mode", "error"),
    [("close", BackendUnavailable), ("garbage", BackendProtocolError), ("silent", BackendUnavailable)],
)
def test_blocking_lock_on_a_broken_server_gives_typed_errors_without_hanging(
    mode: str, error: type[LockError]
) -> None:
    """The synchronous connections are bounded and typed like the asyncio ones (op_timeout_s is
    the shared backend's default, 2 s)."""
    ready = threading.Event()
    box: list[Any] = []

    async def serve() -> None:
        server, url = await fake_server(mode)
        stop = asyncio.Event()
        box.append((asyncio.get_running_loop(), stop, url))
        ready.set()
        async with server:
            await stop.wait()
        await asyncio.sleep(0.2)  # let the handlers see their clients' sockets closed

    runner = threading.Thread(target=asyncio.run, args=(serve(),))
    runner.start()
    try:
        assert ready.wait(5)
        url = box[0][2]
        lock = BlockingLock(RedisLock(url, "x", ttl=5.0, fair=True))
        for _ in range(2):  # and again on the next connection
            t0 = time.monotonic()
            with pytest.raises(error):
                lock.acquire(timeout=1)
            assert time.monotonic() - t0 < 3.0
    finally:
        if box:
            box[0][0].call_soon_threadsafe(box[0][1].set)
        runner.join(10)


def test_a_release_after_a_server_restart_goes_over_a_fresh_connection(redis_server_fn: RedisServer) -> None:
    """Restarting the server leaves every pooled connection dead: the (idempotent) release is
    sent again on a new one, finds the lease gone (no persistence) and reports it lost instead of
    raising; the next acquire works."""
    lock = BlockingLock(RedisLock(redis_server_fn.url, "restart", ttl=5.0))
    held = lock.acquire()
    redis_server_fn.restart()
    held.release()
    _wait_for(held.lost.is_set)
    again = lock.acquire(timeout=2)
    assert again.token == 1  # the counter restarted with the data (documented)
    again.release()


def test_a_lock_handed_from_thread_to_thread_is_renewed_past_its_hand_over_lease(url: str) -> None:
    """The hand-over lease (min(ttl, waiter_ttl_s): 0.6 s here) is all the server promised the
    new holder; the watchdog renews it to the full TTL a third of the way in. A thread that got the
    lock by a direct hand-off holds it for 1.5 s: still ours, never lost, and the next thread
    gets it with the next token."""
    lock = BlockingLock(RedisLock(url, "renewed", ttl=3.0, fair=True, waiter_ttl_s=0.6))
    key = "stalwart:lock:{renewed}"
    holder = lock.acquire()
    got: list[Any] = []

    def waiter() -> None:
        held = lock.acquire(timeout=10)
        got.append(held)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            held.ensure()  # raises LockLost if the lease was not kept
            time.sleep(0.05)
        got.append(client.pttl(key))
        held.release()

    client = _client(url)
    t = threading.Thread(target=waiter)
    t.start()
    try:
        _wait_for(lambda: client.zcard(f"{key}:q") == 1)
        holder.release()
        t.join(10)
        held, pttl = got
        assert held.token == holder.token + 1 and not held.lost.is_set()
        assert pttl > 1000, "renewed to the full TTL, not left on the 0.6 s hand-over lease"
        again = lock.acquire(timeout=2)
        assert again.token == held.token + 1
        again.release()
    finally:
        client.close()
    _leaves_nothing(lock, url)


def _pooled_ports(lock: BlockingLock) -> list[int]:
    fast = lock._fast
    assert fast is not None
    return [s.getsockname()[1] for s in fast.pool._idle]


@pytest.mark.parametrize("how", ["closed", "stray reply"])
def test_an_acquire_checks_an_idle_pooled_connection_first(url: str, how: str) -> None:
    """The server closed the pooled connections while they sat idle (its ``timeout`` setting;
    here CLIENT KILL of just those), or bytes nobody asked for wait on them: the acquire (never
    sent twice) must not fail with BackendUnavailable, nor read the stray bytes as its reply."""
    lock = BlockingLock(RedisLock(url, f"idle-{how}", ttl=5.0))
    lock.acquire().release()
    fast = lock._fast
    assert fast is not None and fast.pool._idle  # (the pool is shared by the tests' locks)
    client = _client(url)
    try:
        if how == "closed":
            ports = {str(port) for port in _pooled_ports(lock)}
            ids = [c["id"] for c in client.client_list() if c["addr"].rpartition(":")[2] in ports]
            assert len(ids) == len(ports)
            for client_id in ids:
                client.execute_command("CLIENT", "KILL", "ID", client_id)
        else:
            for sock in fast.pool._idle:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")  # its reply is never read
        time.sleep(0.1)  # the FINs or the stray replies have arrived
        held = lock.acquire(timeout=2)
        held.ensure()
        held.release()
        assert client.get(f"stalwart:lock:{{idle-{how}}}") is None
    finally:
        client.close()


def test_an_acquire_after_a_server_restart_goes_over_a_fresh_connection(redis_server_fn: RedisServer) -> None:
    """A restart leaves the pooled connections dead; the next acquire (not idempotent, so not
    retried) must find that out before it sends, not fail with BackendUnavailable."""
    lock = BlockingLock(RedisLock(redis_server_fn.url, "restart-acquire", ttl=5.0))
    lock.acquire().release()
    assert _pooled_ports(lock)
    redis_server_fn.restart()
    held = lock.acquire(timeout=2)
    assert held.token == 1  # the counter restarted with the data (documented)
    held.release()


def test_a_wait_whose_subscription_is_cut_short_leaves_nothing_subscribed(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait's timeout runs out while its thread group is being subscribed (listed as a
    waiter, not yet confirmed): once the thread has left, the channel must be unsubscribed and the
    subscriber connection closed, as after any wait (before: listed and subscribed for good)."""
    holder = BlockingLock(RedisLock(url, "cut", ttl=10.0)).acquire()
    lock = BlockingLock(RedisLock(url, "cut", ttl=10.0))
    fast = lock._fast_path()
    assert fast is not None
    waker = fast.backend.waker
    real_subscribe = waker.ensure_subscribed

    async def slow_subscribe(waiter: Any) -> None:
        await asyncio.sleep(0.3)  # a slow server: the wait's timeout runs out meanwhile
        await real_subscribe(waiter)

    monkeypatch.setattr(waker, "ensure_subscribed", slow_subscribe)
    with pytest.raises(LockTimeout):
        lock.acquire(timeout=0.1)  # the first try fails; the subscription step then times out
    monkeypatch.undo()
    holder.release()
    _wait_for(lambda: not any(fast.group in w for w in fast.backend.waker._waiters.values()))
    _leaves_nothing(lock, url)
