"""The asyncio host of the pure 2PC coordinator, over real databases.

Every input (a commit request, a vote, an acknowledgement, a tick) steps the pure
:class:`~stalwart.txn.twopc.Coordinator` at once, in the task that has it: stepping is pure and
never awaits, so no queue or driver task stands between a reply and the coordinator. Each step's
:class:`~stalwart.sansio.Ready` is then handled on the spot:

- its records go to the log writer, one task that writes whatever accumulated while the previous
  write ran in one durable write (group commit);
- what does not depend on the log (``twopc.depends_on_log``: Prepares, aborts) is sent at once;
- commit decisions (``Decide(commit)`` and the committed outcome the caller waits for) are held
  back until every must-sync record handed to the writer up to then is durable.

So no ``Decide(commit)`` leaves before the COMMIT record it depends on is durable, and a new
transaction's Prepare never waits for another transaction's fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from stalwart.errors import ConfigError, StorageError
from stalwart.sansio import Envelope, NodeId, PutMeta, StorageOp
from stalwart.txn._decision_log import DecisionLog, SQLiteDecisionLog
from stalwart.txn._errors import OutcomeUnknownError, TransactionAbortedError, TransactionRefusedError
from stalwart.txn._resources import BatchCommitter, ResourceManager
from stalwart.txn.twopc import (
    Ack,
    CommitRequest,
    Coordinator,
    CoordinatorConfig,
    CoordinatorInput,
    CoordinatorMessage,
    CoordinatorOutput,
    Decide,
    Outcome,
    Phase,
    Prepare,
    TxDecided,
    TxFinished,
    TxId,
    TxRefusedError,
    Vote,
    depends_on_log,
)

log = logging.getLogger("stalwart.txn")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
LOG_ID_KEY = "log_id"  # a random id stored in the decision log when it is created
_PARTICIPANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MAX_CALLS_PER_RESOURCE = 64
MAX_COMMIT_BATCH = 64  # phase-2 commits sent to one participant in one call
MAX_DEFERRED_OPS = 512
GROUP_COMMIT_YIELDS = 1  # event-loop turns a write waits for more records before it starts
MAX_LOG_RETRY_DELAY_S = 5.0

K = TypeVar("K")
FaultHook = Callable[[str, str], None]
"""Called as ``hook(point, txid)`` at step boundaries (tests kill the process there). Points:
before-prepare, after-prepare, after-decision-logged, mid-phase-two, after-phase-two."""


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    vote_timeout_s: float = 10.0
    retry_interval_s: float = 0.5
    tick_ms: int = 50
    outcome_timeout_s: float = 30.0
    recovery_grace_s: float = 30.0
    recovery_interval_s: float = 5.0
    max_inflight: int = 1_000
    shutdown_timeout_s: float = 10.0
    log_write_attempts: int = 30
    """A decision-log write that keeps failing (backoff up to 5 s: about 2 minutes in all) stops
    the coordinator: every waiting caller gets OutcomeUnknownError, and a restart recovers."""

    def __post_init__(self) -> None:
        durations = (
            self.vote_timeout_s,
            self.retry_interval_s,
            self.outcome_timeout_s,
            self.recovery_interval_s,
        )
        if (
            self.tick_ms < 1
            or min(durations) <= 0
            or self.recovery_grace_s < 0
            or self.max_inflight < 1
            or self.log_write_attempts < 1
        ):
            raise ConfigError(
                "coordinator settings: tick_ms >= 1, positive timeouts and intervals, grace >= 0,"
                " max_inflight and log_write_attempts >= 1"
            )

    def to_config(self) -> CoordinatorConfig:
        return CoordinatorConfig(
            vote_timeout_ticks=max(1, round(self.vote_timeout_s * 1000 / self.tick_ms)),
            retry_interval_ticks=max(1, round(self.retry_interval_s * 1000 / self.tick_ms)),
            max_inflight=self.max_inflight,
        )


def _expire(fut: asyncio.Future[TxDecided], txid: str) -> None:
    if not fut.done():
        fut.set_exception(OutcomeUnknownError(txid, "no decision in time; recovery will finish it"))


def _pop_expired(deadlines: dict[K, float], now: float) -> list[K]:
    """Remove and return the keys whose deadline has passed. Every entry was added with the same
    timeout, so insertion order is deadline order: the scan stops at the first one in time."""
    expired = []
    for key, until in deadlines.items():
        if until > now:
            break
        expired.append(key)
    for key in expired:
        del deadlines[key]
    return expired


class Transaction:
    """Work on named participants; committed atomically when the ``async with`` block exits."""

    def __init__(self, host: TwoPhaseCoordinator, txid: TxId) -> None:
        self._host = host
        self.txid = txid
        self._begun: list[str] = []
        self._gids: dict[str, str] = {}  # participant -> branch id, made once

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(self._begun)

    async def execute(
        self, participant: str, statement: str, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run a statement on ``participant`` inside this transaction; returns its rows."""
        resource = self._host.resource(participant)
        gid = self._gids.get(participant)
        if gid is None:
            gid = self._host.gid(self.txid, participant)
            await resource.begin(gid)
            self._gids[participant] = gid  # only once begun: a failed begin can be tried again
            self._begun.append(participant)
        return await resource.execute(gid, statement, params)

    async def _rollback(self) -> None:
        for name in self._begun:
            with contextlib.suppress(Exception):
                await self._host.resource(name).rollback(self._gids[name])


class _TransactionScope:
    def __init__(self, host: TwoPhaseCoordinator) -> None:
        self._host = host
        self._tx: Transaction | None = None

    async def __aenter__(self) -> Transaction:
        self._tx = Transaction(self._host, TxId(secrets.token_hex(8)))
        return self._tx

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tx = self._tx
        assert tx is not None
        if exc is not None:
            await tx._rollback()
            return
        if not tx.participants:
            return
        try:
            await self._host._commit(tx)
        except TransactionRefusedError:
            await tx._rollback()  # nothing was decided: the open branches must not linger
            raise


class TwoPhaseCoordinator:
    """``async with TwoPhaseCoordinator([pg, maria]) as coord:`` then ``coord.transaction()``.

    The decision log is SQLite at ``log_path`` by default; pass ``log=PostgresDecisionLog(...)``
    when several coordinators share one database (each with its own ``name``).
    """

    def __init__(
        self,
        resources: Sequence[ResourceManager],
        *,
        name: str = "default",
        log: DecisionLog | None = None,
        log_path: str | Path = "stalwart-txn.sqlite3",
        settings: CoordinatorSettings | None = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(f"coordinator name {name!r}: 1-16 letters, digits, '_' or '-'")
        names = [r.name for r in resources]
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"participant names must be unique and non-empty: {names}")
        bad = [n for n in names if not _PARTICIPANT_RE.fullmatch(n)]
        if bad:
            raise ConfigError(f"participant names {bad}: 1-16 letters, digits, '_' or '-'")
        self.name = name
        self._resources = {r.name: r for r in resources}
        self._batchers: dict[str, BatchCommitter] = {
            r.name: cast(BatchCommitter, r) for r in resources if hasattr(r, "commit_prepared_many")
        }
        self._log = log if log is not None else SQLiteDecisionLog(log_path, name)
        self._settings = settings or CoordinatorSettings()
        self._hook = fault_hook
        self._coord: Coordinator | None = None
        # Waiting callers and running participant calls, each with its deadline on the loop's
        # clock. Every entry gets the same timeout, so insertion order is deadline order and the
        # ticker's sweep stops at the first one still in time (no timer handle per entry).
        self._waiting: dict[TxId, asyncio.Future[TxDecided]] = {}
        self._waiting_until: dict[TxId, float] = {}
        self._tasks: dict[asyncio.Task[None], float] = {}
        # (participant, txid) -> the task calling it: a message is not sent again while a call for
        # it runs, and a task releases only the keys it still owns.
        self._calls: dict[tuple[str, TxId], asyncio.Task[None]] = {}
        self._prepared: dict[TxId, set[str]] = {}
        self._committed: dict[TxId, set[str]] = {}
        self._tx_parts: dict[TxId, tuple[str, ...]] = {}
        self._limits = {n: asyncio.Semaphore(MAX_CALLS_PER_RESOURCE) for n in self._resources}
        self._first_seen: dict[str, float] = {}
        self._background: list[asyncio.Task[None]] = []
        # The log writer: records not yet handed to a write, and the batches' sequence numbers
        # (the batch being assembled is ``_issued + 1``).
        self._pending: list[StorageOp] = []
        self._issued = 0
        self._durable = 0
        self._sync_target = 0  # the newest batch holding a must-sync record
        self._write_wanted = asyncio.Event()
        self._stopping = False
        self._closing = False  # set at the end of shutdown: no participant call starts after it
        # Commit decisions held back until batch ``target`` is durable: (target, messages, outputs).
        self._held: deque[tuple[int, list[Envelope[CoordinatorMessage]], list[TxDecided]]] = deque()
        # (participant, txid) of the held messages: a resend of one already held is dropped, so
        # a log that cannot be written for minutes holds at most one message per branch.
        self._held_keys: set[tuple[str, TxId]] = set()
        self._failure: BaseException | None = None
        self._log_id = ""
        self._foreign_seen: set[str] = set()

    @property
    def prefix(self) -> str:
        """Every branch id of this coordinator and this decision log starts with this."""
        return f"st:{self.name}.{self._log_id}:"

    def gid(self, txid: str, participant: str) -> str:
        """The branch id on one participant (<= 64 bytes, as XA requires).

        It carries the decision log's id, so a coordinator never touches branches that another
        log (another process that reused the name, a log that was lost) is responsible for, and
        it names the participant: PostgreSQL's prepared transactions are server-wide, so two
        participants that are databases of one server need different ids.
        """
        return f"{self.prefix}{txid}:{participant}"

    def resource(self, name: str) -> ResourceManager:
        try:
            return self._resources[name]
        except KeyError:
            raise ConfigError(f"no participant named {name!r}; have {sorted(self._resources)}") from None

    def transaction(self) -> _TransactionScope:
        if self._coord is None:
            raise ConfigError("use the coordinator inside `async with` (it must recover first)")
        if self._driver_failed():
            raise OutcomeUnknownError("-", "the coordinator has stopped; restart it")
        return _TransactionScope(self)

    # -- life cycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> TwoPhaseCoordinator:
        for resource in self._resources.values():
            await resource.preflight()
        await self._log.acquire()  # one live coordinator per log: refuses if another holds it
        durable = await self._log.load()
        log_id = durable.meta.get(LOG_ID_KEY)
        if log_id is None:
            log_id = secrets.token_hex(3).encode()
            await self._log.write([PutMeta(LOG_ID_KEY, log_id)])
        self._log_id = log_id.decode()
        self._coord = Coordinator(NodeId(self.name), durable, self._settings.to_config())
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._writer(), name="2pc-log-writer"),
            loop.create_task(self._ticker(), name="2pc-ticker"),
            loop.create_task(self._recovery_loop(), name="2pc-recovery"),
        ]
        for task in self._background[:2]:
            task.add_done_callback(self._on_background_done)
        self._process(self._coord)  # recovery's outputs: the decisions it resumed (durable)
        return self

    def _on_background_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """The coordinator cannot go on (a bug, or a log that cannot be written): every waiting
        transaction learns its outcome is unknown; recovery after a restart finishes them."""
        if self._failure is not None:
            return
        self._failure = exc
        log.error("2PC coordinator stopped: %r; pending outcomes are unknown until restart", exc)
        for txid, fut in self._waiting.items():
            if not fut.done():
                fut.set_exception(OutcomeUnknownError(txid, f"the coordinator failed: {exc!r}"))

    async def __aexit__(self, *exc_info: object) -> None:
        # Let phase 2 of every decided transaction finish (bounded), so a clean shutdown leaves
        # nothing prepared behind; what is still unfinished then is finished by recovery.
        coord = self._coord
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.shutdown_timeout_s):
                while coord is not None and coord.inflight and not self._driver_failed():
                    await asyncio.sleep(self._settings.tick_ms / 1000)
        writer, others = self._background[0], self._background[1:]
        for task in others:  # no more ticks (resends) nor recovery scans
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        # The writer writes what is left (END records) and stops; it is cancelled only if that
        # does not end in time (the log's close then waits for a write still in its thread).
        self._stopping = True
        self._write_wanted.set()
        done, _ = await asyncio.wait([writer], timeout=self._settings.shutdown_timeout_s)
        if not done:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        # Nothing new starts from here (what is undone is finished by recovery after a restart),
        # and the participant calls still running end before the resources close.
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for txid, fut in self._waiting.items():
            if not fut.done():
                fut.set_exception(OutcomeUnknownError(txid, "the coordinator shut down"))
        await self._log.close()
        for resource in self._resources.values():
            await resource.close()

    # -- the driver ------------------------------------------------------------------------------

    async def _commit(self, tx: Transaction) -> None:
        coord = self._coord
        assert coord is not None
        if self._driver_failed():
            raise TransactionRefusedError(tx.txid, "the coordinator has stopped; restart it")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TxDecided] = loop.create_future()
        self._waiting[tx.txid] = fut
        self._tx_parts[tx.txid] = tx.participants
        self._waiting_until[tx.txid] = loop.time() + self._settings.outcome_timeout_s
        try:
            try:
                coord.step(NodeId("client"), CommitRequest(tx.txid, tx.participants))
            except TxRefusedError as exc:
                self._tx_parts.pop(tx.txid, None)
                raise TransactionRefusedError(tx.txid, str(exc)) from None
            self._process(coord)
            decided = await fut
        finally:
            self._waiting.pop(tx.txid, None)
            self._waiting_until.pop(tx.txid, None)
        if decided.outcome is Outcome.ABORTED:
            raise TransactionAbortedError(tx.txid, decided.reason)

    async def _ticker(self) -> None:
        coord = self._coord
        assert coord is not None
        loop = asyncio.get_running_loop()
        while self._failure is None:  # stopped: nothing may be resent (recovery takes over)
            await asyncio.sleep(self._settings.tick_ms / 1000)
            coord.tick()
            self._process(coord)
            self._sweep(loop.time())

    def _sweep(self, now: float) -> None:
        """Time out waiting callers and hung participant calls (checked once per tick)."""
        for task in _pop_expired(self._tasks, now):
            # A participant call that hangs is cancelled: a Prepare then counts as no vote (the
            # coordinator's own vote timeout aborts), a Decide is sent again later.
            task.cancel()
        for txid in _pop_expired(self._waiting_until, now):
            _expire(self._waiting[txid], txid)

    def _feed(self, source: str, message: CoordinatorInput) -> None:
        """A participant's reply: step the coordinator now and handle what it wants done."""
        coord = self._coord
        assert coord is not None
        if self._failure is not None:
            return  # stopped: recovery after a restart takes over
        try:
            coord.step(NodeId(source), message)
            self._process(coord)
        except Exception as exc:  # a broken invariant: stop rather than risk atomicity
            self._fail(exc)

    def _process(self, coord: Coordinator) -> None:
        """Handle one step's Ready: records to the writer, the rest sent or held back."""
        ready = coord.ready()
        if ready.is_empty:
            return
        coord.advance(ready)  # this host now owns everything in it
        if ready.persist:
            self._pending.extend(ready.persist)
            if ready.must_sync:
                self._sync_target = self._issued + 1  # the batch being assembled
                self._write_wanted.set()
            elif len(self._pending) >= MAX_DEFERRED_OPS:
                self._write_wanted.set()
        send: list[Envelope[CoordinatorMessage]] = []
        held: list[Envelope[CoordinatorMessage]] = []
        for env in ready.messages:
            if not depends_on_log(env.payload):
                send.append(env)
            elif (key := (env.to, env.payload.txid)) not in self._held_keys:
                held.append(env)
                self._held_keys.add(key)
        now: list[CoordinatorOutput] = []
        decided: list[TxDecided] = []
        for out in ready.outputs:
            if depends_on_log(out):
                assert isinstance(out, TxDecided)
                decided.append(out)
            else:
                now.append(out)
        self._deliver(send, now)
        if held or decided:
            self._held.append((self._sync_target, held, decided))
            if self._sync_target <= self._durable:  # a resend: its record is durable already
                self._release_held()

    def _deliver(
        self,
        messages: Sequence[Envelope[CoordinatorMessage]],
        outputs: Sequence[CoordinatorOutput] = (),
        *,
        logged: bool = False,
    ) -> None:
        """Send messages (calls to the participants) and hand outputs to the waiting callers."""
        if logged:
            for out in outputs:
                self._fault("after-decision-logged", out.txid)
        # Calls to the participants, each in its own bounded task; commits to a participant that
        # can take several at once go together in one call.
        commits: dict[str, dict[TxId, None]] = {}  # participant -> txids, in order, once each
        for env in messages:
            payload = env.payload
            if isinstance(payload, Decide) and payload.commit and env.to in self._batchers:
                if (env.to, payload.txid) not in self._calls:
                    commits.setdefault(env.to, {})[payload.txid] = None
            else:
                self._dispatch(env)
        for participant, batch in commits.items():
            txids = list(batch)
            for at in range(0, len(txids), MAX_COMMIT_BATCH):
                chunk = txids[at : at + MAX_COMMIT_BATCH]
                self._spawn(self._commit_batch(participant, chunk), [(participant, t) for t in chunk])
        for out in outputs:
            if isinstance(out, TxDecided):
                fut = self._waiting.get(out.txid)
                if fut is not None and not fut.done():
                    fut.set_result(out)
            elif isinstance(out, TxFinished):
                self._prepared.pop(out.txid, None)
                self._committed.pop(out.txid, None)
                self._tx_parts.pop(out.txid, None)
                log.debug("transaction %s finished: %s", out.txid, out.outcome)

    async def _writer(self) -> None:
        """The one task that writes the decision log: each write takes every record handed over
        while the previous one ran (group commit); then the commit decisions it covers go out."""
        while True:
            if not self._stopping:  # stopping: write what is left without waiting for a wake-up
                await self._write_wanted.wait()
                for _ in range(GROUP_COMMIT_YIELDS):
                    await asyncio.sleep(0)  # let the replies already received join this write
            self._write_wanted.clear()
            if self._pending:
                ops, self._pending = self._pending, []
                self._issued += 1
                await self._write_log_until_it_works(ops)
                self._durable = self._issued
                self._release_held()
            elif self._stopping:
                return

    def _release_held(self) -> None:
        """Send the commit decisions that the log writes so far made durable.

        The coordinator resends a decision every retry interval from the moment it decides, so
        a slow write collects resends behind it: only one per branch was held, and none is sent
        for a transaction that every participant acknowledged meanwhile.
        """
        coord = self._coord
        assert coord is not None
        messages: list[Envelope[CoordinatorMessage]] = []
        outputs: list[TxDecided] = []
        while self._held and self._held[0][0] <= self._durable:
            _, held, decided = self._held.popleft()
            outputs.extend(decided)
            for env in held:
                self._held_keys.discard((env.to, env.payload.txid))
                if coord.phase_of(env.payload.txid) is not None:
                    messages.append(env)
        self._deliver(messages, outputs, logged=True)

    async def _write_log_until_it_works(self, ops: list[StorageOp]) -> None:
        """A failed write (a busy SQLite, a dropped PostgreSQL connection) is retried with
        backoff: nothing that depends on it has been sent, so waiting is always safe."""
        delay_s = 0.05
        for attempt in range(1, self._settings.log_write_attempts + 1):
            try:
                await self._log.write(ops)
                return
            except StorageError as exc:
                if attempt == self._settings.log_write_attempts:
                    raise  # the writer stops, and with it the coordinator (see _fail)
                log.error("decision log write failed, retrying in %.2f s: %s", delay_s, exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, MAX_LOG_RETRY_DELAY_S)

    def _driver_failed(self) -> bool:
        return self._failure is not None or any(t.done() for t in self._background)

    def _fault(self, point: str, txid: str) -> None:
        if self._hook is not None:
            self._hook(point, txid)

    def _dispatch(self, env: Envelope[CoordinatorMessage]) -> None:
        key = (env.to, env.payload.txid)
        if key in self._calls:
            return  # the previous attempt is still running; the coordinator will resend
        self._spawn(self._call(env.to, env.payload), [key])

    def _spawn(self, call: Coroutine[Any, Any, None], keys: list[tuple[str, TxId]]) -> None:
        """Run one participant call in a task; ``keys`` are released from ``_calls`` when it ends."""
        if self._closing:
            call.close()  # shutting down: recovery after a restart sends it again
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(call)
        self._tasks[task] = loop.time() + self._settings.vote_timeout_s  # see _sweep
        for key in keys:
            self._calls[key] = task

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.pop(t, None)
            for key in keys:
                if self._calls.get(key) is t:
                    del self._calls[key]

        task.add_done_callback(done)

    async def _call(self, participant: str, message: CoordinatorMessage) -> None:
        resource = self._resources[participant]
        gid = self.gid(message.txid, participant)
        reply: CoordinatorInput | None = None
        async with self._limits[participant]:
            match message:
                case Prepare(txid=txid):
                    if not self._prepared.get(txid):
                        self._fault("before-prepare", txid)
                    reply = await self._prepare(resource, participant, txid, gid)
                case Decide(txid=txid, commit=commit):
                    reply = await self._decide(resource, participant, txid, gid, commit)
        key = (participant, message.txid)
        if isinstance(message, Prepare) and self._calls.get(key) is asyncio.current_task():
            # This call is over: the decision its vote triggers, to the same participant, must
            # not be skipped as a duplicate. (An ack triggers nothing; its key is released when
            # the task ends.)
            del self._calls[key]
        if reply is not None:
            self._feed(participant, reply)

    async def _commit_batch(self, participant: str, txids: list[TxId]) -> None:
        """Phase 2 commit of several transactions on one participant, in one call."""
        batcher = self._batchers[participant]
        gids = {self.gid(t, participant): t for t in txids}
        async with self._limits[participant]:
            try:
                failed = set(await batcher.commit_prepared_many(list(gids)))
            except Exception as exc:  # retried by the coordinator until acknowledged
                log.warning(
                    "phase 2 on %s for %d transactions failed, will retry: %r", participant, len(txids), exc
                )
                return
        if failed:  # only these are retried; the others are acknowledged below
            log.warning("phase 2 on %s failed for %s, will retry", participant, sorted(failed))
        acked = [txid for gid, txid in gids.items() if gid not in failed]
        for txid in acked:
            self._note_committed(participant, txid)
        for txid in acked:
            self._feed(participant, Ack(txid))

    def _note_committed(self, participant: str, txid: TxId) -> None:
        coord = self._coord
        assert coord is not None
        if coord.phase_of(txid) is None:
            return  # a late duplicate call of a finished transaction: keep no state for it
        done = self._committed.setdefault(txid, set())
        done.add(participant)
        self._fault("mid-phase-two" if len(done) == 1 else "after-phase-two", txid)

    async def _prepare(self, resource: ResourceManager, participant: str, txid: TxId, gid: str) -> Vote:
        try:
            yes, reason = await resource.prepare(gid)
        except Exception as exc:  # a participant failing in any way is a no vote, never a crash
            yes, reason = False, f"prepare failed: {exc!r}"
        coord = self._coord
        assert coord is not None
        if yes and coord.phase_of(txid) is Phase.PREPARING:
            done = self._prepared.setdefault(txid, set())
            done.add(participant)
            if len(done) == len(self._tx_parts.get(txid, ())):
                self._fault("after-prepare", txid)
        return Vote(txid, yes, reason)

    async def _decide(
        self, resource: ResourceManager, participant: str, txid: TxId, gid: str, commit: bool
    ) -> Ack | None:
        try:
            if commit:
                await resource.commit_prepared(gid)
            else:
                await resource.rollback(gid)
        except Exception as exc:  # retried by the coordinator until acknowledged
            log.warning("phase 2 on %s for %s failed, will retry: %r", participant, txid, exc)
            return None
        if commit:
            self._note_committed(participant, txid)
        return Ack(txid)

    # -- recovery of prepared branches left on the participants --------------------------------

    async def _recovery_loop(self) -> None:
        while True:
            try:
                await self.recover_participants()
            except Exception as exc:  # a down participant must not stop the scan of the others
                log.warning("recovery scan failed: %r", exc)
            await asyncio.sleep(self._settings.recovery_interval_s)

    async def recover_participants(self) -> int:
        """Roll back prepared branches with no COMMIT record, once older than the grace period.

        Branches of committed transactions are left to phase 2, which the coordinator resumed
        from its log. Branches under this coordinator's name but another decision log's id are
        never touched (another log decides them), only reported. A participant that fails does
        not stop the scan of the others. Returns the number of branches rolled back.
        """
        coord = self._coord
        assert coord is not None
        loop = asyncio.get_running_loop()
        ours, mine = self.prefix, f"st:{self.name}."
        rolled_back = 0
        seen: set[str] = set()
        for name, resource in self._resources.items():
            try:
                gids = await resource.recover(mine)
            except Exception as exc:  # a down participant must not stop the scan of the others
                log.warning("recovery scan of %s failed: %r", name, exc)
                continue
            for gid in gids:
                if not gid.startswith(ours):
                    if gid not in self._foreign_seen:
                        self._foreign_seen.add(gid)
                        log.warning(
                            "%s holds prepared branch %s of another decision log; left alone", name, gid
                        )
                    continue
                seen.add(gid)
                txid = TxId(gid[len(ours) :].split(":", 1)[0])
                if coord.phase_of(txid) is not None:
                    continue  # in flight here, or committed and being finished by phase 2
                first = self._first_seen.setdefault(gid, loop.time())
                if loop.time() - first < self._settings.recovery_grace_s:
                    continue
                try:
                    log.info("rolling back orphan prepared branch %s on %s (presumed abort)", gid, name)
                    await resource.rollback(gid)
                    rolled_back += 1
                except Exception as exc:  # retried at the next scan
                    log.warning("rollback of orphan %s on %s failed: %r", gid, name, exc)
        self._first_seen = {g: t for g, t in self._first_seen.items() if g in seen}
        return rolled_back
