"""ParallelBatchProcessor: a pool of workers that runs every item through its strategy.

Batch mode: ``add_work`` then ``process_all``. Streaming mode: ``start``, ``add_work`` at
any time, ``finish``, and ``results()`` as an async iterator, with bounded memory.

Reading order: the public API; the worker pool (one ``asyncio.TaskGroup``, so a worker's
crash surfaces in ``join``); one item's way (:meth:`ParallelBatchProcessor._process_item`:
admission, an attempt, its classification, then a cooldown, a backoff or the item's end);
results; rate limits and pacing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import warnings
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, Generic

from .base import (
    BatchProcessor,
    BatchResult,
    LLMWorkItem,
    PostProcessorFunc,
    ProcessingStats,
    ProgressCallbackFunc,
    TContext,
    TInput,
    TOutput,
    WorkItemResult,
)
from .core.attempt_report import failure_facts, limits_snapshot
from .core.calls import CallOutcome, read_return, start_call, tell_error
from .core.clock import SYSTEM_CLOCK, Clock
from .core.config import ProcessorConfig
from .core.cooldown import CooldownCoordinator, RateLimitTooLong, provider_wait
from .core.events import Emitters, EventDispatcher
from .core.item_run import ItemRun
from .core.pacing import Pacer
from .core.signatures import after_process_takes_item
from .middleware.base import Middleware
from .observers.base import ProcessorObserver
from .observers.payloads import ItemCompleted, ItemFailed, ItemRetry, RateLimitHit
from .strategies.errors import (
    DefaultErrorClassifier,
    ErrorClassifier,
    ErrorInfo,
    FrameworkTimeoutError,
    RateLimitRetriesExceeded,
    StrategyReturnError,
    failed_attempt_usage,
)
from .strategies.rate_limit import ExponentialBackoffStrategy, RateLimitStrategy

logger = logging.getLogger(__name__)

#: End-of-input marker, passed from worker to worker (and ending ``results()``).
_END: Any = object()
#: Items a worker processes before it lets the loop run others.
_YIELD_EVERY = 32

Item = LLMWorkItem[Any, Any, Any]
Result = WorkItemResult[Any, Any]


class _PreparedStrategy:
    """One strategy instance and whether its ``prepare()`` has run (under its lock)."""

    __slots__ = ("lock", "prepared", "strategy")

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy
        self.lock = asyncio.Lock()
        self.prepared = False


class ParallelBatchProcessor(
    BatchProcessor[TInput, TOutput, TContext], Generic[TInput, TOutput, TContext]
):
    """Processes work items in parallel, each as individual strategy calls.

    ``clock`` (ours): where cooldowns, pacing, slow start and backoff take their time
    from; tests pass ``async_batch_llm.testing.VirtualClock`` to run them in no time.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        post_processor: PostProcessorFunc[TOutput, TContext] | None = None,
        timeout_per_item: float | None = None,
        rate_limit_cooldown: float | None = None,
        config: ProcessorConfig | None = None,
        error_classifier: ErrorClassifier | None = None,
        rate_limit_strategy: RateLimitStrategy | None = None,
        middlewares: list[Middleware[TInput, TOutput, TContext]] | None = None,
        observers: list[ProcessorObserver] | None = None,
        progress_callback: ProgressCallbackFunc | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.config = _with_legacy_keywords(
            config, max_workers, timeout_per_item, rate_limit_cooldown
        )
        cfg = self.config
        self.post_processor = post_processor
        self.progress_callback = progress_callback
        self.error_classifier = error_classifier
        self._default_classifier: ErrorClassifier = DefaultErrorClassifier()
        self.rate_limit_strategy: RateLimitStrategy = (
            rate_limit_strategy or _default_rate_limit_strategy(cfg)
        )
        self.middlewares: list[Middleware[TInput, TOutput, TContext]] = list(middlewares or [])
        self._clock = clock or SYSTEM_CLOCK
        self._events = EventDispatcher(list(observers or []), cfg.observer_timeout)
        self._emit = Emitters(self._events)
        self._pacer = (
            Pacer(cfg.max_requests_per_minute, cfg.max_tokens_per_minute, self._clock)
            if cfg.max_requests_per_minute or cfg.max_tokens_per_minute
            else None
        )
        self._limits_emitted = float("-inf")  # clock time of the last LIMITS_LEARNED
        self._stats = ProcessingStats()
        self._strategies: dict[int, _PreparedStrategy] = {}
        self._prepared: set[int] = set()  # ids of prepared strategies: the hot path's check
        # Items added before the start, in order: the n-th taken has input index n.
        self._backlog: deque[Item] = deque()
        self._backlog_taken = 0
        self._queue: asyncio.Queue[Any] | None = None  # (index, item) pairs, then _END
        self._results: list[WorkItemResult[TOutput, TContext]] = []
        self._result_queue: asyncio.Queue[Any] | None = None
        self._collect = True
        self._stream_ended = False  # readers of results() stop once the buffer is empty
        self._stop_sent = False  # the end marker is in the results buffer
        # The worker pool: one task group run by the pool task (see _run_pool).
        self._pool: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._idle_workers: set[int] = set()  # waiting for input: can retire at once
        self._retiring: set[int] = set()
        self._next_worker_id = 0
        self._target_workers = cfg.max_workers
        self._shrinking = False  # set_max_workers lowered the count: some workers retire
        self._started = False
        self._closed = False
        self._streaming = False
        self._finished: asyncio.Event | None = None
        self._added = 0
        self._idle: asyncio.Event | None = None  # set once every added item is done
        # Dispatch gate: open unless paused or cooling down after a rate limit.
        self._gate: asyncio.Event | None = None
        self._paused = False
        self._cooldown_until = 0.0  # clock time
        self._cooldown_timer: asyncio.Task[None] | None = None
        self._cooling = False  # a cooldown is being decided or is in force
        self._cooldowns = CooldownCoordinator(
            cfg.rate_limit.max_cooldown_seconds, calm_after=cfg.max_workers
        )
        self._slow_start_count = -1  # -1: no slow start in force
        self._admit_freely = False  # see _refresh_admission
        self._last_progress = 0
        self._start_time = 0.0  # clock time

    # ----------------------------------------------------------------- public API

    # ----------------------------------------------------------------- public API

    @property
    def _proactive_rate_limiter(self) -> Pacer | None:
        """The reference's name for the proactive pacer (``acquire()`` before each call)."""
        return self._pacer

    @property
    def observers(self) -> list[ProcessorObserver]:
        """The observers events are delivered to."""
        return self._events.observers

    async def add_work(self, work_item: LLMWorkItem[TInput, TOutput, TContext]) -> None:
        """Queue an item. In streaming mode this waits while the queue is full."""
        if self._started and not self._streaming:
            raise RuntimeError(
                "Cannot add work after process_all() has started. "
                "Create a new processor instance for additional batches."
            )
        if self._queue is None:
            self._extend_backlog((work_item,))
            return
        if not isinstance(work_item, LLMWorkItem):
            raise TypeError(f"add_work expects an LLMWorkItem, got {type(work_item).__name__}")
        if self._closed:
            raise RuntimeError("cannot add work: finish() was called, the processor takes no more")
        entry = (self._added, work_item)
        self._added += 1
        self._not_idle()
        self._stats.total = self._added
        await self._queue.put(entry)

    async def add_many(
        self,
        items: Iterable[LLMWorkItem[TInput, TOutput, TContext]]
        | AsyncIterable[LLMWorkItem[TInput, TOutput, TContext]],
    ) -> int:
        """Queue every item of an iterable or async iterable; return how many were queued."""
        count = 0
        if isinstance(items, AsyncIterable):
            async for item in items:
                await self.add_work(item)
                count += 1
        elif self._queue is None:  # batch mode before the start: no queue to wait on
            count = self._extend_backlog(items)
        else:
            for item in items:
                await self.add_work(item)
                count += 1
        return count

    def _extend_backlog(self, items: Iterable[LLMWorkItem[TInput, TOutput, TContext]]) -> int:
        """Append many items at once (batch mode before the start); return how many."""
        if self._closed:
            raise RuntimeError("cannot add work: finish() was called, the processor takes no more")
        backlog = self._backlog
        before = len(backlog)
        try:
            for work_item in items:
                if not isinstance(work_item, LLMWorkItem):
                    raise TypeError(
                        f"add_work expects an LLMWorkItem, got {type(work_item).__name__}"
                    )
                backlog.append(work_item)
        finally:  # the items before a bad one stay queued, as with add_work one by one
            count = len(backlog) - before
            self._added += count
            self._not_idle()
            self._stats.total = self._added
        return count

    async def process_all(self) -> BatchResult[TOutput, TContext]:
        """Run every added item; return all results (completion order)."""
        if self._started:
            raise RuntimeError("process_all() can run once per processor")
        await self._start_pool(streaming=False)
        await self.join()
        return BatchResult(self._results)

    async def start(
        self, *, collect_results: bool = True, max_buffered_results: int = 1000
    ) -> None:
        """Start streaming mode: workers run now and take items as ``add_work`` queues them.

        With ``collect_results`` the results are handed out by :meth:`results` through a
        bounded buffer (workers wait while it is full); without it they reach only the
        observers, and nothing is kept in memory.
        """
        if self._started:
            raise RuntimeError("the processor has already started")
        self._collect = collect_results
        if collect_results:
            self._result_queue = asyncio.Queue(maxsize=max_buffered_results)
        await self._start_pool(streaming=True)

    async def finish(self) -> None:
        """Take no more input; workers end once every queued item is done."""
        if self._closed:
            return
        self._closed = True
        if self._queue is not None:
            await self._queue.put(_END)

    async def wait_idle(self) -> None:
        """Wait until every item added so far has its result (streaming mode: more may be
        added after, and the processor goes on taking them)."""
        while self._stats.processed < self._added:
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()

    def _not_idle(self) -> None:
        if self._idle is not None:
            self._idle.clear()

    async def join(self) -> None:
        """Wait until every worker has ended (call :meth:`finish` first).

        A worker that crashed (an engine bug outside any one item) is not swallowed: its
        error is raised here, in an ``ExceptionGroup``, after the run was ended.
        """
        if self._pool is not None:
            await self._pool
        await self._complete()

    async def results(self) -> AsyncIterator[WorkItemResult[TOutput, TContext]]:
        """Results in completion order, until input is finished and every item is done."""
        if self._result_queue is None:
            raise RuntimeError("results() needs start(collect_results=True)")
        queue = self._result_queue
        while True:
            if self._stream_ended and queue.empty():
                return
            result = await queue.get()
            if result is _END:
                self._stream_ended = True
                queue.put_nowait(_END)  # for any other reader (there is room: we took one)
                return
            yield result

    def _end_result_stream(self) -> None:
        """Tell ``results()`` readers the stream is over, even with the buffer full."""
        queue = self._result_queue
        if queue is None or self._stream_ended or self._stop_sent:
            return
        try:
            queue.put_nowait(_END)
            self._stop_sent = True
        except asyncio.QueueFull:
            self._stream_ended = True  # readers stop once they have drained the buffer

    async def process_stream(
        self,
        items: Iterable[LLMWorkItem[TInput, TOutput, TContext]]
        | AsyncIterable[LLMWorkItem[TInput, TOutput, TContext]],
    ) -> AsyncIterator[WorkItemResult[TOutput, TContext]]:
        """Feed ``items`` while yielding results: start, add, finish and iterate in one call."""
        await self.start(collect_results=True)

        async def feed() -> None:
            try:
                await self.add_many(items)
            finally:
                await self.finish()

        feeder = asyncio.get_running_loop().create_task(feed())
        try:
            async for result in self.results():
                yield result
            await feeder
        finally:
            if not feeder.done():
                feeder.cancel()

    async def get_stats(self) -> dict[str, Any]:
        """Counters of the run so far: cheap, and safe to call mid-run."""
        stats = self._stats.as_dict()
        stats["queued"] = self._added - self._stats.processed
        stats["workers"] = len(self._workers)
        stats["paused"] = self._paused
        stats["cooldown_remaining"] = max(0.0, self._cooldown_until - self._clock.now())
        return stats

    @property
    def stats(self) -> ProcessingStats:
        """The live counters (read them in the processor's loop; ``copy()`` to keep them)."""
        return self._stats

    def pause(self) -> None:
        """Stop starting new attempts; calls already under way finish."""
        self._paused = True
        if self._gate is not None:
            self._gate.clear()
        self._refresh_admission()

    def resume(self) -> None:
        """Start attempts again (after any cooldown in force)."""
        self._paused = False
        if self._gate is not None and not self._cooling:
            self._gate.set()
        self._refresh_admission()

    @property
    def paused(self) -> bool:
        """True while dispatch is paused by :meth:`pause`."""
        return self._paused

    def set_max_workers(self, count: int) -> None:
        """Change concurrency while running: add workers now, or retire some after their item."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"max_workers must be an integer >= 1, got {count!r}")
        self._target_workers = count
        if self._group is None:  # not started, or every worker has ended
            return
        while len(self._workers) < count:
            self._spawn_worker()
        # Idle workers retire now; busy ones retire after their item.
        excess = len(self._workers) - len(self._retiring) - count
        self._shrinking = excess > 0
        for worker_id in sorted(self._idle_workers - self._retiring)[: max(excess, 0)]:
            self._retiring.add(worker_id)
            self._workers[worker_id].cancel()

    def set_pacing(self, rpm: float | None, tpm: float | None) -> None:
        """Change the requests- and tokens-per-minute budgets while running (None: none of
        ours; limits the provider declares still apply). Takes effect from the next call."""
        for name, value in (("max_requests_per_minute", rpm), ("max_tokens_per_minute", tpm)):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if self._pacer is None:
            self._pacer = Pacer(rpm, tpm, self._clock)
        else:
            self._pacer.configure(rpm, tpm)
        self._refresh_admission()

    async def cancel(self) -> None:
        """Stop now: cancel the workers; items under way get no result."""
        self._closed = True
        pool = self._pool
        if pool is not None and not pool.done():
            pool.cancel()
            await asyncio.wait([pool])  # raises only if our caller is cancelled meanwhile
        if pool is not None and not pool.cancelled() and pool.exception() is not None:
            logger.error("the worker pool had crashed before it was cancelled")
        await self._complete(cancelled=True)

    async def shutdown(self) -> None:
        """Cancel anything still running and clean up every prepared strategy."""
        await self.cleanup()

    async def cleanup(self) -> None:
        """Cancel the workers if any still run, stop a cooldown, clean up the strategies."""
        if self._workers:
            await self.cancel()
        self._stop_cooldown_timer()
        await self._cleanup_strategies()
        await self._events.drain()
        self._events.close()

    # ----------------------------------------------------------------- the worker pool

    async def _start_pool(self, *, streaming: bool) -> None:
        """Open the gate, announce the batch and start the workers in their task group."""
        self._started = True
        self._streaming = streaming
        cfg = self.config
        self._queue = asyncio.Queue(maxsize=cfg.max_queue_size if streaming else 0)
        if not streaming:  # batch mode: every item is in the backlog already
            self._closed = True
            self._queue.put_nowait(_END)
        self._gate = asyncio.Event()
        if not self._paused:
            self._gate.set()
        self._refresh_admission()
        self._finished = asyncio.Event()
        self._stats.start_time = time.time()
        self._start_time = self._clock.now()
        if (emit := self._emit.batch_started) is not None:
            emit(
                {
                    "total": self._added,
                    "max_workers": self._target_workers,
                    "start_time": self._stats.start_time,
                    "streaming": streaming,
                }
            )
        started = asyncio.Event()
        self._pool = asyncio.get_running_loop().create_task(self._run_pool(started))
        await started.wait()  # the workers exist once start() returns

    async def _run_pool(self, started: asyncio.Event) -> None:
        """Run every worker in one task group; end the run once they have all ended.

        A worker that raises takes the group down (the others are cancelled): the run is
        ended as cancelled and the error surfaces in :meth:`join`.
        """
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for _ in range(self._target_workers):
                    self._spawn_worker()
                started.set()
        except Exception:
            logger.exception("a worker crashed; the run is stopped")
            await self._complete(cancelled=True)
            raise
        finally:
            self._group = None
            started.set()
        await self._complete()

    def _spawn_worker(self) -> None:
        assert self._group is not None
        worker_id = self._next_worker_id
        self._next_worker_id += 1
        self._workers[worker_id] = self._group.create_task(self._worker(worker_id))

    async def _worker(self, worker_id: int) -> None:
        """Take items until the input ends (or this worker retires), one at a time."""
        if (emit := self._emit.worker_started) is not None:
            emit({"worker_id": worker_id})
        handled = 0
        try:
            while (taken := await self._next_item(worker_id)) is not None:
                index, item = taken
                result = await self._run_item(item, index, worker_id)
                await self._hand_on(result)
                handled += 1
                if handled % _YIELD_EVERY == 0:
                    await self._let_others_run()
        finally:
            self._workers.pop(worker_id, None)
            self._retiring.discard(worker_id)
            if (emit_stopped := self._emit.worker_stopped) is not None:
                emit_stopped({"worker_id": worker_id})

    async def _next_item(self, worker_id: int) -> tuple[int, Item] | None:
        """The next item and its input index; None once this worker should stop."""
        if self._shrinking and not self._keeps_worker():
            return None
        if self._backlog:
            index = self._backlog_taken
            self._backlog_taken = index + 1
            return index, self._backlog.popleft()
        return await self._wait_for_input(worker_id)

    async def _wait_for_input(self, worker_id: int) -> tuple[int, Item] | None:
        """Wait for an item added while running; None at the end of input or on retiring."""
        queue = self._queue
        assert queue is not None
        self._idle_workers.add(worker_id)
        try:
            entry = await queue.get()
        except asyncio.CancelledError:
            if worker_id not in self._retiring:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return None  # set_max_workers retired this idle worker
        finally:
            self._idle_workers.discard(worker_id)
        if entry is _END:
            queue.put_nowait(_END)  # pass it on to the next worker
            return None
        return entry  # type: ignore[no-any-return]

    def _keeps_worker(self) -> bool:
        """While shrinking, whether the asking worker carries on (no: it retires now)."""
        if len(self._workers) - len(self._retiring) > self._target_workers:
            return False
        self._shrinking = False
        return True

    async def _let_others_run(self) -> None:
        """Yield the loop now and then; wait for an observer that lags far behind or asks
        the workers to hold (``ProcessorObserver.hold_workers``).

        Calls that finish without awaiting (dry runs, caches) never suspend: the other
        workers, the store's writer and timers need a turn too.
        """
        await asyncio.sleep(0)
        if self._events.has_async_observers and self._events.lagging():
            await self._events.drain()  # bounded memory: wait for a slow observer
        for hold in self._events.holds:  # e.g. the run store's writer thread needs a turn
            await hold()

    async def _run_item(self, item: Item, index: int, worker_id: int) -> Result:
        """One item's result; an engine bug costs that item, never the run."""
        try:
            return await self._process_item(item, index, worker_id)
        except Exception as error:
            logger.exception("internal error on item %r", item.item_id)
            run = ItemRun(item, index, worker_id, self._clock.now())
            return await self._fail(run, error, "internal_error")

    # ----------------------------------------------------------------- one item

    async def _process_item(self, item: Item, index: int, worker_id: int) -> Result:
        """One item from its first attempt to its result.

        Prepare its strategy once; then, until the item ends: the middlewares' say, wait
        for admission (pause, cooldown, slow start, pacing), one attempt, and after a
        failure its classification decides: a cooldown, a backoff, or the item's end.
        """
        run = ItemRun(item, index, worker_id, self._clock.now())
        error = await self._prepare_once(item.strategy)
        if error is not None:
            return await self._fail(run, error, "prepare_error")
        while True:
            work = await self._before_process(item) if self.middlewares else item
            if work is None:
                return await self._fail(run, None, "skipped")
            # Nothing awaits between admission and the call: no attempt starts in a cooldown.
            estimate = 0 if self._admit_freely else await self._admit(work)
            sent_in_generation = self._cooldowns.generation
            outcome = await self._attempt(run, work)
            if isinstance(outcome, CallOutcome):
                return await self._succeed(run, outcome, estimate)
            ended = await self._after_failure(run, work, outcome, estimate, sent_in_generation)
            if ended is not None:
                return ended

    async def _prepare_once(self, strategy: Any) -> BaseException | None:
        """Prepare the strategy unless done already (a dry run calls nothing)."""
        if self.config.dry_run or id(strategy) in self._prepared:
            return None
        return await self._prepare(strategy)

    async def _attempt(self, run: ItemRun, work: Item) -> CallOutcome | Exception:
        """One call within ``timeout_per_item``: what it returned, or why it failed."""
        run.attempts += 1
        run.counted += 1
        if (emit := self._emit.item_started) is not None:
            emit({"item_id": run.item.item_id, "worker_id": run.worker_id, "attempt": run.attempts})
        timeout = self.config.timeout_per_item
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                returned = await start_call(
                    work.strategy,
                    work.prompt,
                    run.attempts,
                    timeout,
                    run.state,
                    dry_run=self.config.dry_run,
                )
            return read_return(work.strategy, returned)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the worker is being cancelled: not the attempt's failure
            return RuntimeError("the call was cancelled from inside the strategy")
        except TimeoutError as error:
            if not deadline.expired():
                return error  # the strategy's own timeout, not ours
            return FrameworkTimeoutError(
                f"attempt {run.attempts} of item {run.item.item_id!r} ran past "
                f"timeout_per_item={timeout}s",
                item_id=run.item.item_id,
                elapsed=self._clock.now() - run.started,
                timeout_limit=timeout,
            )
        except Exception as error:
            return error

    async def _succeed(self, run: ItemRun, outcome: CallOutcome, estimate: int) -> Result:
        """The attempt succeeded: account for it and build the item's result."""
        self._settle_pacer(estimate, outcome.usage)
        run.add_usage(outcome.usage)
        metadata = outcome.metadata
        limits = None
        if metadata is not None:
            limits = self._read_metadata(run, metadata)
        if self._cooldowns.consecutive:
            self._cooldowns.succeeded()
        item = run.item
        result: Result = WorkItemResult(
            item_id=item.item_id,
            success=True,
            output=outcome.output,
            context=item.context,
            token_usage=run.token_usage(),
            gemini_safety_ratings=metadata.get("gemini_safety_ratings") if metadata else None,
            attempts=run.attempts,
            duration=self._clock.now() - run.started,
            cost=run.cost,
            metadata=metadata,
            input_index=run.index,
        )
        if self.config.enable_detailed_logging:
            logger.debug(
                "item %r succeeded on attempt %d in %.3fs",
                item.item_id,
                run.attempts,
                result.duration,
            )
        if self.middlewares:
            result = await self._after_process(item, result)
        self._emit_completed(result, run.worker_id, limits)
        return result

    def _read_metadata(self, run: ItemRun, metadata: dict[str, Any]) -> Any:
        """What a successful call's metadata tells: the provider's limits (returned, None
        when it declared none), the call's cost."""
        limits = metadata.get("rate_limits")
        if limits is not None:
            self._learn_limits(limits)
        run.add_cost(metadata.get("cost"))
        return limits

    async def _after_failure(
        self,
        run: ItemRun,
        work: Item,
        error: Exception,
        estimate: int,
        sent_in_generation: int,
    ) -> Result | None:
        """Account for a failed attempt, then decide: the item's end (its result), or None
        after a cooldown began or a backoff was waited out (the item goes again)."""
        used = failed_attempt_usage(error)
        self._settle_pacer(estimate, used)
        run.add_usage(used)
        run.add_cost(used.get("cost") if used else None)
        limits = getattr(error, "rate_limits", None)
        if limits is not None:
            self._learn_limits(limits)
        run.status, run.limits = failure_facts(error)
        info = self._classify(work.strategy, error)
        if self.config.enable_detailed_logging:
            logger.debug(
                "item %r attempt %d failed (%s, retryable=%s, rate limit=%s): %s",
                run.item.item_id,
                run.attempts,
                info.error_category,
                info.is_retryable,
                info.is_rate_limit,
                _describe(error),
            )
        try:
            await tell_error(work.strategy, error, run.attempts, run.state)
        except Exception:
            logger.exception("strategy.on_error failed for item %r", run.item.item_id)
        if info.is_rate_limit:
            return await self._rate_limited(run, error, info, sent_in_generation)
        return await self._retry_or_fail(run, error, info, used)

    async def _rate_limited(
        self, run: ItemRun, error: Exception, info: ErrorInfo, sent_in_generation: int
    ) -> Result | None:
        """A rate limit: fail the item if it has had too many, else join (or start) a cooldown.

        Rate-limited attempts do not count against ``max_attempts``; they have their own
        budget, ``max_rate_limit_retries``.
        """
        run.rate_limited += 1
        run.counted -= 1
        self._stats.rate_limit_count += 1
        if (emit := self._emit.rate_limit_hit) is not None:
            hit: RateLimitHit = {
                "item_id": run.item.item_id,
                "worker_id": run.worker_id,
                "attempt": run.attempts,
                "error": _describe(error),
                "suggested_wait": info.suggested_wait,
            }
            if run.status is not None:
                hit["status"] = run.status
            if run.limits is not None:
                hit["rate_limits"] = run.limits
            emit(hit)
        budget = self.config.rate_limit.max_rate_limit_retries
        if run.rate_limited > budget:
            too_many = RateLimitRetriesExceeded(
                f"rate-limited {run.rate_limited} times (max_rate_limit_retries="
                f"{budget}): {_describe(error)}"
            )
            return await self._fail(run, too_many, "rate_limit")
        cooldowns = self._cooldowns
        cooldowns.refused()
        try:
            cooldowns.check_wait(info, _describe(error))
        except RateLimitTooLong as too_long:
            return await self._fail(run, too_long, "rate_limit")
        fresh = not self._cooling and not cooldowns.is_echo(sent_in_generation)
        if fresh and cooldowns.backs_off_alone(info, run.rate_limited):
            await self._clock.sleep(self._backoff(run.rate_limited))  # one storm, one cooldown
            return None
        await self._start_cooldown(run.worker_id, info, sent_in_generation)
        return None

    async def _retry_or_fail(
        self, run: ItemRun, error: Exception, info: ErrorInfo, used: dict[str, int] | None
    ) -> Result | None:
        """Fail the item if the error is final or its attempts are used up; else back off."""
        if not info.is_retryable or run.counted >= self.config.retry.max_attempts:
            return await self._fail(run, error, info.error_category)
        wait = 0.0 if info.error_category == "validation_error" else self._backoff(run.counted + 1)
        self._stats.retry_count += 1
        if (emit := self._emit.item_retry) is not None:
            retry: ItemRetry = {
                "item_id": run.item.item_id,
                "worker_id": run.worker_id,
                "attempt": run.attempts,
                "wait": wait,
                "error_type": type(error).__name__,
                "error_category": info.error_category,
                "error": _describe(error),
                "tokens": used,
            }
            if run.status is not None:
                retry["status"] = run.status
            if run.limits is not None:
                retry["rate_limits"] = run.limits
            emit(retry)
        if wait > 0:
            await self._clock.sleep(wait)
        return None

    def _backoff(self, next_attempt: int) -> float:
        """Seconds to wait before ``next_attempt``: exponential, with jitter if configured."""
        retry = self.config.retry
        wait = retry.wait_before(next_attempt)
        if retry.jitter:
            wait *= random.uniform(0.5, 1.0)
        return wait

    def _classify(self, strategy: Any, error: Exception) -> ErrorInfo:
        """What the failure means: the processor's classifier, the strategy's, or the default."""
        if isinstance(error, StrategyReturnError):
            return ErrorInfo(False, False, False, "invalid_strategy_return")
        chosen = (
            self.error_classifier
            or getattr(strategy, "error_classifier", None)
            or self._default_classifier
        )
        try:
            return chosen.classify(error)
        except Exception:
            logger.exception("error classifier %r failed; using the default", chosen)
            return self._default_classifier.classify(error)

    async def _admit(self, item: Item) -> int:
        """Wait until an attempt may start: no pause, no cooldown, slow start and pacing done.

        Returns the token estimate booked with the pacer. The gate is checked again after
        every wait, so an attempt never starts while a cooldown begun meanwhile is in force.
        """
        gate = self._gate
        assert gate is not None
        while True:
            while not gate.is_set():
                await gate.wait()
            if self._slow_start_count >= 0:
                await self._slow_start_delay()
            estimate = await self._pace(item)
            if gate.is_set():
                return estimate
            self._settle_pacer(estimate, None)  # a cooldown began meanwhile: book it again

    async def _pace(self, item: Item) -> int:
        """Wait for the pacer's slot (if pacing); return the tokens booked for the call."""
        pacer = self._pacer
        if pacer is None:
            return 0
        estimate = item.strategy.estimate_tokens(item.prompt)
        await pacer.acquire(estimate)
        return estimate

    def _settle_pacer(self, estimate: int, usage: Mapping[str, Any] | None) -> None:
        """Tell the pacer what a call really used (it booked ``estimate`` before)."""
        if self._pacer is not None:
            self._pacer.settle(estimate, usage.get("total_tokens", 0) if usage else 0)

    async def _prepare(self, strategy: Any) -> BaseException | None:
        """Prepare a strategy once (under a lock); a failure is returned, and retried next time."""
        key = id(strategy)
        entry = self._strategies.get(key)
        if entry is None:
            entry = self._strategies[key] = _PreparedStrategy(strategy)
        async with entry.lock:
            if entry.prepared:
                return None
            try:
                await strategy.prepare()
            except Exception as exc:
                logger.warning("prepare() of strategy %r failed: %s", strategy, exc)
                return exc
            entry.prepared = True
            self._prepared.add(key)
        return None

    async def _ensure_strategy_prepared(self, strategy: Any) -> None:
        """Prepare ``strategy`` once (the reference's name); a failed prepare raises."""
        error = await self._prepare(strategy)
        if error is not None:
            raise error

    async def _cleanup_strategies(self) -> None:
        """Clean up every prepared strategy once (the reference's name)."""
        for entry in list(self._strategies.values()):
            if not entry.prepared:
                continue
            entry.prepared = False
            try:
                await entry.strategy.cleanup()
            except Exception as error:  # one failure must not skip the others
                logger.warning(
                    "cleanup() of strategy %s failed: %s",
                    type(entry.strategy).__name__,
                    error,
                    exc_info=True,
                )
        self._prepared.clear()

    async def _before_process(self, item: Item) -> Item | None:
        """Each middleware's ``before_process`` in order; None: a middleware skips the item."""
        work = item
        for middleware in self.middlewares:
            try:
                changed = await middleware.before_process(work)
            except Exception:
                logger.exception("middleware %r before_process failed; skipped", middleware)
                continue
            if changed is None:
                return None
            work = changed
        return work

    # ----------------------------------------------------------------- outcomes

    async def _after_process(self, item: Item, result: Result) -> Result:
        """Each middleware's ``after_process`` on a success, in reverse order (with the work
        item too, for a middleware written ``after_process(work_item, result)``)."""
        for middleware in reversed(self.middlewares):
            try:
                if after_process_takes_item(middleware):
                    documented_shape: Any = middleware.after_process  # not our ABC's shape
                    result = await documented_shape(item, result)
                else:
                    result = await middleware.after_process(result)
            except Exception:
                logger.exception("middleware %r after_process failed; skipped", middleware)
        return result

    async def _fail(self, run: ItemRun, error: BaseException | None, category: str) -> Result:
        """End the item as failed (``error`` None: a middleware skipped it).

        A middleware's ``on_error`` may still hand back a result of its own, even a success.
        """
        rescued = await self._middleware_result(run.item, error)
        if rescued is not None:
            rescued.attempts = rescued.attempts or run.attempts
            rescued.input_index = run.index
            if rescued.success:
                self._emit_completed(rescued, run.worker_id)
                return rescued
            result = rescued
        else:
            result = WorkItemResult(
                item_id=run.item.item_id,
                success=False,
                error="Skipped by middleware" if error is None else _describe(error),
                context=run.item.context,
                token_usage=run.token_usage(),
                attempts=run.attempts,
                error_category=category,
                duration=self._clock.now() - run.started,
                cost=run.cost,
                input_index=run.index,
            )
        if (emit := self._emit.item_failed) is not None:
            failed: ItemFailed = {
                "item_id": run.item.item_id,
                "worker_id": run.worker_id,
                "error": result.error,
                "error_type": "ItemSkipped" if error is None else type(error).__name__,
                "error_category": result.error_category or category,
                "attempts": run.attempts,
                "duration": result.duration,
                "tokens": result.token_usage,
                "cost": result.cost,
                "result": result,
            }
            if run.status is not None:
                failed["status"] = run.status
            if run.limits is not None:
                failed["rate_limits"] = run.limits
            emit(failed)
        return result

    async def _middleware_result(self, item: Item, error: BaseException | None) -> Result | None:
        """The first result a middleware's ``on_error`` offers for a failed item, if any."""
        if not isinstance(error, Exception):
            return None
        for middleware in self.middlewares:
            try:
                result = await middleware.on_error(item, error)
            except Exception:
                logger.exception("middleware %r on_error failed; skipped", middleware)
                continue
            if result is not None:
                return result
        return None

    def _emit_completed(self, result: Result, worker_id: int, limits: Any = None) -> None:
        """``ITEM_COMPLETED``, with the provider's rate-limit snapshot when it sent one."""
        if (emit := self._emit.item_completed) is not None:
            completed: ItemCompleted = {
                "item_id": result.item_id,
                "worker_id": worker_id,
                "duration": result.duration,
                "attempts": result.attempts,
                "tokens": result.token_usage,
                "cost": result.cost,
                "result": result,
            }
            if limits is not None and (snapshot := limits_snapshot(limits)) is not None:
                completed["rate_limits"] = snapshot
            emit(completed)

    def _count(self, result: Result) -> None:
        """Add one result to the run's counters."""
        stats = self._stats
        stats.processed += 1
        if stats.processed == self._added and self._idle is not None:
            self._idle.set()
        if result.success:
            stats.succeeded += 1
        else:
            stats.failed += 1
            category = result.error_category or "unknown"
            stats.error_counts[category] = stats.error_counts.get(category, 0) + 1
        usage = result.token_usage
        stats.total_input_tokens += usage.get("input_tokens", 0)
        stats.total_output_tokens += usage.get("output_tokens", 0)
        stats.total_tokens += usage.get("total_tokens", 0)
        stats.cached_input_tokens += usage.get("cached_input_tokens", 0)
        if result.cost is not None:
            stats.total_cost += result.cost
            stats.cost_known = True

    async def _hand_on(self, result: Result) -> None:
        """Count the result, run the post-processor and progress callback, pass it on."""
        self._count(result)
        if self.post_processor is not None:
            await self._run_post_processor(result)
        if self.progress_callback is not None:
            await self._report_progress(result.item_id)
        if self._result_queue is not None:
            await self._result_queue.put(result)
        elif self._collect:
            self._results.append(result)

    async def _report_progress(self, item_id: str) -> None:
        """The progress callback, every ``progress_interval`` results and for the last one."""
        processed = self._stats.processed
        due = processed - self._last_progress >= self.config.progress_interval
        if due or (self._closed and processed == self._added):
            self._last_progress = processed
            await self._call_progress(processed, self._added, item_id)

    async def _run_post_processor(self, result: Result) -> None:
        try:
            async with asyncio.timeout(self.config.post_processor_timeout):
                returned = self.post_processor(result)  # type: ignore[misc]
                if asyncio.iscoroutine(returned):
                    await returned
        except TimeoutError:
            logger.warning(
                "post_processor took over %ss on item %r; skipped",
                self.config.post_processor_timeout,
                result.item_id,
            )
        except Exception:
            logger.exception("post_processor failed on item %r", result.item_id)

    async def _call_progress(self, completed: int, total: int, item_id: str) -> None:
        try:
            returned = self.progress_callback(completed, total, item_id)  # type: ignore[misc]
            if asyncio.iscoroutine(returned):
                async with asyncio.timeout(self.config.progress_callback_timeout):
                    await returned
        except TimeoutError:
            logger.warning(
                "progress_callback took over %ss; skipped", self.config.progress_callback_timeout
            )
        except Exception:
            logger.exception("progress_callback failed")

    async def _complete(self, *, cancelled: bool = False) -> None:
        """Once every worker has ended: final events, stats and the end of the result stream."""
        if self._finished is None or self._finished.is_set():
            return
        self._finished.set()
        self._stop_cooldown_timer()
        stats = self._stats
        stats.end_time = time.time()
        if (emit := self._emit.batch_completed) is not None:
            emit(
                {
                    "processed": stats.processed,
                    "succeeded": stats.succeeded,
                    "failed": stats.failed,
                    "total": self._added,
                    "total_tokens": stats.total_tokens,
                    "cached_input_tokens": stats.cached_input_tokens,
                    "duration": self._clock.now() - self._start_time,
                    "cancelled": cancelled,
                }
            )
        queue = self._result_queue
        if cancelled:
            self._end_result_stream()  # never waits on a full buffer nobody reads
        elif queue is not None and not self._stream_ended and not self._stop_sent:
            await queue.put(_END)
            self._stop_sent = True
        await self._events.drain()
        self._events.close()

    # ----------------------------------------------------------------- rate limits

    async def _start_cooldown(self, worker_id: int, info: ErrorInfo, sent_generation: int) -> None:
        """Pause every worker: the first fresh 429 coordinates, the others just wait.

        A 429 answering a request sent before the latest cooldown began (an echo of the
        same storm) neither starts nor escalates one: see :mod:`core.cooldown`.
        """
        cooldowns = self._cooldowns
        if self._cooling or cooldowns.is_echo(sent_generation):
            return  # wait at the gate with everyone else
        gate = self._gate
        assert gate is not None
        self._cooling = True
        gate.clear()  # before any await: nothing is sent while the duration is decided
        self._slow_start_count = -1
        self._refresh_admission()
        policy = 0.0
        if provider_wait(info) is None:
            try:
                policy = await self.rate_limit_strategy.on_rate_limit(
                    worker_id, cooldowns.consecutive + 1
                )
            except Exception:
                logger.exception("rate_limit_strategy.on_rate_limit failed; no cooldown")
        duration, consecutive = cooldowns.begin(info, policy)
        now = self._clock.now()
        self._cooldown_until = now + duration
        if self._pacer is not None:
            self._pacer.defer_until(now + duration)
        self._cooldown_timer = asyncio.get_running_loop().create_task(
            self._cool_down(duration), name="abl-cooldown"
        )
        if (emit := self._emit.cooldown_started) is not None:
            emit(
                {
                    "worker_id": worker_id,
                    "duration": duration,
                    "consecutive": consecutive,
                    "until": time.time() + duration,
                    "provider_wait": provider_wait(info),
                }
            )

    async def _cool_down(self, duration: float) -> None:
        """Wait out a cooldown on the processor's clock, then open the gate again."""
        await self._clock.sleep(duration)
        self._cooldown_timer = None
        self._end_cooldown(duration)

    def _stop_cooldown_timer(self) -> None:
        """Forget a cooldown still in force (the run is over or being cleaned up)."""
        timer, self._cooldown_timer = self._cooldown_timer, None
        if timer is not None:
            timer.cancel()
            self._cooling = False

    def _end_cooldown(self, duration: float) -> None:
        self._cooling = False
        self._cooldown_until = 0.0
        self._slow_start_count = 0
        if not self._paused and self._gate is not None:
            self._gate.set()
        self._refresh_admission()
        if (emit := self._emit.cooldown_ended) is not None:
            emit({"duration": duration})

    def _learn_limits(self, limits: Any) -> None:
        """Pace the run to the limits the provider declared on a response.

        With no rpm/tpm configured the run paces itself to the declaration; with both, to
        the lower. Observers hear of it when the pace moves, and at most once a second.
        """
        pacer = self._pacer
        if pacer is None:
            pacer = self._pacer = Pacer(None, None, self._clock)
        changed = pacer.learn(limits)
        self._refresh_admission()  # after learning: the pacer paces only once it has a budget
        now = self._clock.now()
        emit = self._emit.limits_learned
        if emit is None or not (changed or now - self._limits_emitted >= 1.0):
            return
        self._limits_emitted = now
        emit(
            {
                "requests_limit": getattr(limits, "requests_limit", None),
                "requests_remaining": getattr(limits, "requests_remaining", None),
                "requests_reset_s": getattr(limits, "requests_reset_s", None),
                "tokens_limit": getattr(limits, "tokens_limit", None),
                "tokens_remaining": getattr(limits, "tokens_remaining", None),
                "tokens_reset_s": getattr(limits, "tokens_reset_s", None),
                "rpm": pacer.rpm,
                "tpm": pacer.tpm,
            }
        )

    def _refresh_admission(self) -> None:
        """Attempts skip :meth:`_admit` only while nothing can hold them back.

        That is: the gate is open (no pause, no cooldown), no slow start is in force and no
        pacer is set. Called after every change to any of those.
        """
        gate = self._gate
        self._admit_freely = (
            gate is not None
            and gate.is_set()
            and self._slow_start_count < 0
            and (self._pacer is None or not self._pacer.paces)
        )

    async def _slow_start_delay(self) -> None:
        count = self._slow_start_count
        self._slow_start_count = count + 1
        apply, delay = self.rate_limit_strategy.should_apply_slow_start(count)
        if not apply:
            self._slow_start_count = -1
            self._refresh_admission()
            return
        if delay > 0:
            await self._clock.sleep(delay)


def _default_rate_limit_strategy(config: ProcessorConfig) -> RateLimitStrategy:
    """The cooldown policy the config describes: exponential, then slow start."""
    limits = config.rate_limit
    return ExponentialBackoffStrategy(
        initial_cooldown=limits.cooldown_seconds,
        max_cooldown=max(limits.cooldown_seconds * 4, limits.cooldown_seconds),
        backoff_multiplier=limits.backoff_multiplier,
        slow_start_items=limits.slow_start_items,
        slow_start_initial_delay=limits.slow_start_initial_delay,
        slow_start_final_delay=limits.slow_start_final_delay,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _with_legacy_keywords(
    config: ProcessorConfig | None,
    max_workers: int | None,
    timeout_per_item: float | None,
    rate_limit_cooldown: float | None,
) -> ProcessorConfig:
    """Apply the deprecated constructor keywords to a copy of ``config`` (never the original)."""
    config = config if config is not None else ProcessorConfig()
    legacy = {
        name: value
        for name, value in (
            ("max_workers", max_workers),
            ("timeout_per_item", timeout_per_item),
            ("rate_limit_cooldown", rate_limit_cooldown),
        )
        if value is not None
    }
    if not legacy:
        return config
    warnings.warn(
        f"ParallelBatchProcessor({', '.join(legacy)}=...) is deprecated: "
        "pass config=ProcessorConfig(...) instead",
        DeprecationWarning,
        stacklevel=3,
    )
    changes: dict[str, Any] = {}
    if max_workers is not None:
        changes["max_workers"] = max_workers
    if timeout_per_item is not None:
        changes["timeout_per_item"] = timeout_per_item
    if rate_limit_cooldown is not None:
        changes["rate_limit"] = dataclasses.replace(
            config.rate_limit, cooldown_seconds=rate_limit_cooldown
        )
    return dataclasses.replace(config, **changes)
