"""The saga orchestrator: runs declared sagas, logs every step, resumes after a crash.

::

    saga = Saga("order", [
        Step("reserve", reserve, compensate=release),
        Parallel(Step("charge", charge, compensate=refund), Step("email", email)),
        Step("ship", ship, compensate=recall, timeout_s=30),
    ])
    async with SagaOrchestrator(SagaLog.sqlite("sagas.db"), [saga]) as orch:
        result = await orch.run("order", {"order_id": 7})

Each action and compensation is ``async def f(ctx: StepContext) -> JSON-able`` and receives
``ctx.idempotency_key``, the same on every retry and after every restart: a step that runs twice
must take effect once, and the key is how it knows.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stalwart.errors import ConfigError, DecodeError
from stalwart.txn._errors import TransactionError
from stalwart.txn.saga._log import MAX_FIELD_CHARS, SagaLog
from stalwart.txn.saga._state import Kind, Record, SagaState, SagaStatus, Work

log = logging.getLogger("stalwart.saga")
MAX_ACTIVE_SAGAS = 10_000
MAX_REMEMBERED_RESULTS = 10_000
REQUEST_WINDOW = 1_000
MAX_REMEMBERED_REQUESTS = 10_000  # finished sagas whose result wait() can still return


@dataclass(frozen=True, slots=True)
class StepContext:
    saga_id: str
    step: str
    input: Any
    results: dict[str, Any]  # results of the steps done so far
    idempotency_key: str
    attempt: int


StepFn = Callable[[StepContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: delay = uniform(0, min(max_delay, base * 2**n))."""

    max_attempts: int = 5
    base_delay_s: float = 0.05
    max_delay_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ConfigError("retry policy: max_attempts >= 1 and 0 <= base_delay_s <= max_delay_s")

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_delay_s, self.base_delay_s * (2 ** min(attempt, 30))))


class CompensationPolicy(enum.Enum):
    PARK = "park"  # after the retries, park the saga for an operator (stalwart saga resume/abort)
    RETRY_FOREVER = "retry-forever"  # keep retrying (backoff capped) and alert on every failure


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    action: StepFn
    compensate: StepFn | None = None
    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class Parallel:
    """Steps that run at the same time; the next group starts when all of them are done."""

    steps: tuple[Step, ...]

    def __init__(self, *steps: Step) -> None:
        object.__setattr__(self, "steps", steps)


@dataclass(frozen=True, slots=True)
class Saga:
    name: str
    groups: tuple[Parallel, ...]
    compensation_policy: CompensationPolicy = CompensationPolicy.PARK

    def __init__(
        self,
        name: str,
        steps: Sequence[Step | Parallel],
        compensation_policy: CompensationPolicy = CompensationPolicy.PARK,
    ) -> None:
        groups = tuple(s if isinstance(s, Parallel) else Parallel(s) for s in steps)
        names = [st.name for g in groups for st in g.steps]
        if not names or len(names) != len(set(names)) or any(not n or ":" in n for n in names):
            raise ConfigError(f"saga {name!r}: steps need unique, non-empty names without ':'")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "compensation_policy", compensation_policy)

    def step(self, name: str) -> Step:
        for group in self.groups:
            for step in group.steps:
                if step.name == name:
                    return step
        raise KeyError(name)

    def layout(self) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(s.name for s in g.steps) for g in self.groups)


@dataclass(frozen=True, slots=True)
class SagaResult:
    saga_id: str
    status: SagaStatus  # COMPLETED, COMPENSATED or PARKED
    results: dict[str, Any]
    errors: dict[str, str]


class SagaParkedError(TransactionError):
    """A compensation kept failing; the saga waits for an operator."""


class SagaStoppedError(TransactionError):
    """The orchestrator could not go on with a saga (a bug); it resumes at the next start."""


FaultHook = Callable[[str, str, str], None]
"""``hook(point, saga_id, step)`` at before-action, after-action, before-compensation,
after-compensation (tests SIGKILL the process there)."""


class SagaOrchestrator:
    def __init__(
        self,
        log_store: SagaLog,
        sagas: Sequence[Saga],
        *,
        poll_interval_s: float = 1.0,
        alert: Callable[[str, str, str], None] | None = None,
        fault_hook: FaultHook | None = None,
        seed: int | None = None,
        owner: str = "default",
    ) -> None:
        self._log = log_store
        self._sagas = {s.name: s for s in sagas}
        if len(self._sagas) != len(sagas):
            raise ConfigError("saga names must be unique")
        self._poll_s = poll_interval_s
        self._alert = alert
        self._hook = fault_hook
        self._rng = random.Random(seed)
        self._states: dict[str, SagaState] = {}
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, list[asyncio.Future[SagaResult]]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._poller: asyncio.Task[None] | None = None
        self._last_seq = 0
        self._finished: OrderedDict[str, SagaResult] = OrderedDict()
        self._owner = owner
        self._reserved: set[str] = set()
        self._handled_requests: OrderedDict[int, None] = OrderedDict()

    async def __aenter__(self) -> SagaOrchestrator:
        await self._log.acquire(self._owner)  # only one live orchestrator per owner
        self._last_seq = await self._log.last_seq()
        for saga_id, records in (await self._log.unfinished()).items():
            name = records[0].name
            saga = self._sagas.get(name)
            if saga is None:
                log.warning("saga %s of unknown type %r left alone (register it to resume it)", saga_id, name)
                continue
            state = SagaState(saga_id, name, saga.layout())
            try:
                for logged in records:
                    state.apply(logged.record)
            except DecodeError as exc:  # e.g. a step was renamed: this saga needs an operator
                log.error("saga %s cannot be resumed: %s", saga_id, exc)
                continue
            self._start_driver(state)
        self._poller = asyncio.get_running_loop().create_task(self._poll_requests())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        tasks = [*self._drivers.values(), *([self._poller] if self._poller else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._log.close()

    # -- API -------------------------------------------------------------------------------------

    async def start(self, name: str, saga_input: Any = None, saga_id: str | None = None) -> str:
        """Start a saga and return its id once its start is durable (it runs in the background)."""
        saga = self._sagas.get(name)
        if saga is None:
            raise ConfigError(f"no saga named {name!r}; have {sorted(self._sagas)}")
        if len(self._drivers) >= MAX_ACTIVE_SAGAS:
            raise TransactionError(f"{MAX_ACTIVE_SAGAS} sagas active; try again later")
        chosen = saga_id is not None
        saga_id = saga_id or secrets.token_hex(8)
        if saga_id in self._states or saga_id in self._reserved or saga_id in self._finished:
            raise ConfigError(f"saga {saga_id} already exists")
        record = Record(saga_id, Kind.SAGA_STARTED, data=_to_json(saga_input, f"saga {name} input"))
        self._reserved.add(saga_id)  # before any await: two starts of one id cannot both pass
        try:
            if chosen and await self._log.exists(saga_id):
                raise ConfigError(f"saga {saga_id} already exists in the log; saga ids are never reused")
            await self._log.append(name, record)
        finally:
            self._reserved.discard(saga_id)
        state = SagaState(saga_id, name, saga.layout())
        state.apply(record)
        self._start_driver(state)
        return saga_id

    async def wait(self, saga_id: str) -> SagaResult:
        """The saga's end (or its parking); works for sagas finished recently, too."""
        state = self._states.get(saga_id)
        if state is None and saga_id in self._finished:
            return self._finished[saga_id]
        if state is None:
            raise ConfigError(f"no active saga {saga_id} in this orchestrator")
        if state.finished_logged or state.status is SagaStatus.PARKED:
            return self._result(state)
        fut: asyncio.Future[SagaResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(saga_id, []).append(fut)
        return await fut

    async def run(self, name: str, saga_input: Any = None, saga_id: str | None = None) -> SagaResult:
        return await self.wait(await self.start(name, saga_input, saga_id))

    def status(self, saga_id: str) -> SagaStatus | None:
        state = self._states.get(saga_id)
        return None if state is None else state.status

    # -- driving ---------------------------------------------------------------------------------

    def _start_driver(self, state: SagaState) -> None:
        self._states[state.saga_id] = state
        self._wake[state.saga_id] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._drive(state), name=f"saga-{state.saga_id}")
        self._drivers[state.saga_id] = task
        saga_id = state.saga_id

        def forget(_: asyncio.Task[None]) -> None:
            self._drivers.pop(saga_id, None)

        task.add_done_callback(forget)

    async def _drive(self, state: SagaState) -> None:
        running: dict[str, asyncio.Task[None]] = {}
        try:
            await self._drive_steps(state, running)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave callers waiting forever
            log.error("saga %s stopped: %r (it resumes when the orchestrator restarts)", state.saga_id, exc)
            for fut in self._waiters.pop(state.saga_id, []):
                if not fut.done():
                    fut.set_exception(SagaStoppedError(f"saga {state.saga_id} stopped: {exc!r}"))
            self._states.pop(state.saga_id, None)
            self._wake.pop(state.saga_id, None)
        finally:
            # Shutdown or failure: no step of this saga keeps running behind our back.
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)

    async def _drive_steps(self, state: SagaState, running: dict[str, asyncio.Task[None]]) -> None:
        saga = self._sagas[state.name]
        while True:
            for step, work in state.next_work(frozenset(running)):
                running[step] = asyncio.get_running_loop().create_task(self._do(saga, state, step, work))
            if not running:
                if state.status.finished:
                    break
                if state.status is SagaStatus.PARKED:
                    self._notify(state)
                    wake = self._wake[state.saga_id]
                    wake.clear()
                    await wake.wait()  # an operator's resume or abort
                    continue
                raise AssertionError(f"saga {state.saga_id} in {state.status} has nothing to do")
            done, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
            for step in [s for s, t in running.items() if t in done]:
                running.pop(step).result()  # a bug in the orchestrator must surface, not hang
        if not state.finished_logged:
            record = Record(state.saga_id, Kind.FINISHED, data=json.dumps(state.status.value))
            await self._log.append(state.name, record)
            state.apply(record)
        self._notify(state)
        self._finished[state.saga_id] = self._result(state)
        while len(self._finished) > MAX_REMEMBERED_RESULTS:
            self._finished.popitem(last=False)
        self._states.pop(state.saga_id, None)
        self._wake.pop(state.saga_id, None)

    def _notify(self, state: SagaState) -> None:
        for fut in self._waiters.pop(state.saga_id, []):
            if not fut.done():
                fut.set_result(self._result(state))

    def _result(self, state: SagaState) -> SagaResult:
        return SagaResult(
            state.saga_id,
            state.status,
            {k: json.loads(v) for k, v in state.results.items()},
            dict(state.errors),
        )

    async def _do(self, saga: Saga, state: SagaState, step_name: str, work: Work) -> None:
        step = saga.step(step_name)
        compensating = work is Work.COMPENSATION
        fn = step.compensate if compensating else step.action
        started = Kind.COMP_STARTED if compensating else Kind.STEP_STARTED
        await self._append(state, Record(state.saga_id, started, step_name))
        if fn is None:  # nothing to undo for this step
            await self._append(state, Record(state.saga_id, Kind.COMP_DONE, step_name, "null"))
            return
        key = f"{state.saga_id}:{step_name}:{'compensate' if compensating else 'action'}"
        attempt = 0
        while True:
            ctx = StepContext(
                state.saga_id,
                step_name,
                json.loads(state.input_json),
                {k: json.loads(v) for k, v in state.results.items()},
                key,
                attempt,
            )
            self._fault("before-compensation" if compensating else "before-action", state, step_name)
            try:
                async with asyncio.timeout(step.timeout_s):
                    result = await fn(ctx)
                data = _to_json(result, f"step {step_name} result")
                if len(data) > MAX_FIELD_CHARS:
                    raise ConfigError(
                        f"step {step_name} returned {len(data)} characters of JSON (max {MAX_FIELD_CHARS})"
                    )
            except Exception as exc:  # any failure of user code is retried, then handled by policy
                attempt += 1
                error = f"{type(exc).__name__}: {exc}"[:2000]
                log.info(
                    "saga %s step %s %s attempt %d failed: %s",
                    state.saga_id,
                    step_name,
                    work.value,
                    attempt,
                    error,
                )
                if await self._give_up(saga, state, step, (attempt, error), compensating):
                    return
                await asyncio.sleep(step.retry.delay_s(attempt, self._rng))
                if not compensating and state.status is not SagaStatus.RUNNING:
                    return  # aborted meanwhile: the step stays "started" and is compensated
                continue
            self._fault("after-compensation" if compensating else "after-action", state, step_name)
            done = Kind.COMP_DONE if compensating else Kind.STEP_DONE
            await self._append(state, Record(state.saga_id, done, step_name, data))
            return

    async def _give_up(
        self, saga: Saga, state: SagaState, step: Step, failure: tuple[int, str], compensating: bool
    ) -> bool:
        """After a failed attempt: True when retrying is over (and the outcome is logged)."""
        (attempt, error), name = failure, step.name
        if not compensating:
            if attempt < step.retry.max_attempts and state.status is SagaStatus.RUNNING:
                return False
            await self._append(state, Record(state.saga_id, Kind.STEP_FAILED, name, json.dumps(error)))
            return True
        if self._alert is not None and attempt % step.retry.max_attempts == 0:
            self._alert(state.saga_id, name, error)  # once per exhausted round of retries
        if saga.compensation_policy is CompensationPolicy.RETRY_FOREVER or attempt < step.retry.max_attempts:
            return False
        await self._append(state, Record(state.saga_id, Kind.COMP_FAILED, name, json.dumps(error)))
        return True

    async def _append(self, state: SagaState, record: Record) -> None:
        await self._log.append(state.name, record)
        state.apply(record)

    def _fault(self, point: str, state: SagaState, step: str) -> None:
        if self._hook is not None:
            self._hook(point, state.saga_id, step)

    # -- operator requests (stalwart saga resume|abort) -------------------------------------------

    async def _poll_requests(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                # A window behind the last seq: on PostgreSQL a request can commit after one with
                # a higher seq; seqs already handled are skipped.
                requests = await self._log.requests_since(max(0, self._last_seq - REQUEST_WINDOW))
            except Exception as exc:  # a failing poll must not stop the sagas
                log.warning("saga request poll failed: %r", exc)
                continue
            for logged in requests:
                if logged.seq in self._handled_requests:
                    continue
                self._handled_requests[logged.seq] = None
                while len(self._handled_requests) > MAX_REMEMBERED_REQUESTS:
                    self._handled_requests.popitem(last=False)
                self._last_seq = max(self._last_seq, logged.seq)
                state = self._states.get(logged.record.saga_id)
                if state is not None:
                    state.apply(logged.record)
                    self._wake[state.saga_id].set()


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be JSON-serialisable: {exc}") from None
