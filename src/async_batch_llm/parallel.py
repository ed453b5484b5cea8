"""ParallelBatchProcessor: a pool of workers that runs every item through its strategy.

Batch mode: ``add_work`` then ``process_all``. Streaming mode: ``start``, ``add_work`` at
any time, ``finish``, and ``results()`` as an async iterator, with bounded memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import warnings
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, Generic

from .base import (
    BatchProcessor,
    BatchResult,
    LLMWorkItem,
    PostProcessorFunc,
    ProcessingStats,
    ProgressCallbackFunc,
    RetryState,
    TContext,
    TInput,
    TokenUsage,
    TOutput,
    WorkItemResult,
)
from .core.config import ProcessorConfig
from .core.cooldown import CooldownCoordinator, RateLimitTooLong, provider_wait
from .core.events import EventDispatcher
from .core.pacing import Pacer
from .core.resume import ResumedCoroutine
from .core.signatures import NO_STATE, POSITIONAL, call_shape
from .middleware.base import Middleware
from .observers.base import ProcessingEvent, ProcessorObserver
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

_STOP: Any = object()  # end-of-input marker, passed from worker to worker
_EV = ProcessingEvent
_YIELD_EVERY = 32  # items a worker processes before it lets the loop run others
_CANCELLED = asyncio.CancelledError
_perf_counter = time.perf_counter


class _Strategy:
    """What the processor knows about one prepared strategy instance."""

    __slots__ = ("lock", "prepared")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.prepared = False


class ParallelBatchProcessor(
    BatchProcessor[TInput, TOutput, TContext], Generic[TInput, TOutput, TContext]
):
    """Processes work items in parallel, each as individual strategy calls."""

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
    ) -> None:
        self.config = _with_legacy_keywords(
            config, max_workers, timeout_per_item, rate_limit_cooldown
        )
        cfg = self.config
        self.post_processor = post_processor
        self.progress_callback = progress_callback
        self.error_classifier = error_classifier
        self._default_classifier: ErrorClassifier = DefaultErrorClassifier()
        rl = cfg.rate_limit
        self.rate_limit_strategy: RateLimitStrategy = (
            rate_limit_strategy
            or ExponentialBackoffStrategy(
                initial_cooldown=rl.cooldown_seconds,
                max_cooldown=max(rl.cooldown_seconds * 4, rl.cooldown_seconds),
                backoff_multiplier=rl.backoff_multiplier,
                slow_start_items=rl.slow_start_items,
                slow_start_initial_delay=rl.slow_start_initial_delay,
                slow_start_final_delay=rl.slow_start_final_delay,
            )
        )
        self.middlewares: list[Middleware[TInput, TOutput, TContext]] = list(middlewares or [])
        self._events = EventDispatcher(list(observers or []), cfg.observer_timeout)
        self._pacer = (
            Pacer(cfg.max_requests_per_minute, cfg.max_tokens_per_minute)
            if cfg.max_requests_per_minute or cfg.max_tokens_per_minute
            else None
        )
        self._stats = ProcessingStats()
        self._strategies: dict[int, tuple[Any, _Strategy]] = {}
        self._prepared: set[int] = set()  # ids of prepared strategies: the hot path's check
        # How each strategy class takes ``state`` (execute, on_error): see core.signatures.
        self._shapes: dict[type, tuple[int, int]] = {}
        # One delivery function per hot event (None when no observer takes it).
        emitter = self._events.emitter
        self._on_started = emitter(_EV.ITEM_STARTED)
        self._on_completed = emitter(_EV.ITEM_COMPLETED)
        self._on_failed = emitter(_EV.ITEM_FAILED)
        self._on_retry = emitter(_EV.ITEM_RETRY)
        self._on_rate_limit = emitter(_EV.RATE_LIMIT_HIT)
        self._on_limits = emitter(_EV.LIMITS_LEARNED)
        self._limits_emitted = -1e9  # monotonic time of the last LIMITS_LEARNED
        # Items added before the start, in order: the n-th taken has input index n (no
        # (index, item) pair per item: at a million items those tuples cost real time).
        self._backlog: deque[LLMWorkItem[TInput, TOutput, TContext]] = deque()
        self._backlog_taken = 0
        self._queue: asyncio.Queue[Any] | None = None
        self._results: list[WorkItemResult[TOutput, TContext]] = []
        self._result_queue: asyncio.Queue[Any] | None = None
        self._collect = True
        self._stream_ended = False  # readers of results() stop once the buffer is empty
        self._stop_sent = False  # the end marker is in the results buffer
        self._idle_workers: set[int] = set()  # waiting for input: can retire at once
        self._retiring: set[int] = set()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._next_worker_id = 0
        self._target_workers = cfg.max_workers
        self._shrinking = False  # set_max_workers lowered the count: some workers retire
        self._started = False
        self._closed = False
        self._streaming = False
        self._finished: asyncio.Event | None = None
        self._added = 0
        # Dispatch gate: open unless paused or cooling down after a rate limit.
        self._gate: asyncio.Event | None = None
        self._paused = False
        self._cooldown_until = 0.0
        self._cooldown_handle: asyncio.TimerHandle | None = None
        self._cooling = False  # a cooldown is being decided or is in force
        self._cooldowns = CooldownCoordinator(cfg.rate_limit.max_cooldown_seconds)
        self._slow_start_count = -1  # -1: no slow start in force
        self._admit_freely = False  # see _refresh_admission
        self._last_progress = 0
        self._start_monotonic = 0.0

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
            self._stats.total = self._added
        return count

    async def process_all(self) -> BatchResult[TOutput, TContext]:
        """Run every added item; return all results (completion order)."""
        if self._started:
            raise RuntimeError("process_all() can run once per processor")
        self._start_workers(streaming=False)
        await self.finish()
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
        self._start_workers(streaming=True)

    async def finish(self) -> None:
        """Take no more input; workers end once every queued item is done."""
        if self._closed:
            return
        self._closed = True
        if self._queue is not None:
            await self._queue.put(_STOP)

    async def join(self) -> None:
        """Wait until every worker has ended (call :meth:`finish` first)."""
        if self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)
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
            if result is _STOP:
                self._stream_ended = True
                queue.put_nowait(_STOP)  # for any other reader (there is room: we took one)
                return
            yield result

    def _end_result_stream(self) -> None:
        """Tell ``results()`` readers the stream is over, even with the buffer full."""
        queue = self._result_queue
        if queue is None or self._stream_ended or self._stop_sent:
            return
        try:
            queue.put_nowait(_STOP)
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
        stats["cooldown_remaining"] = max(0.0, self._cooldown_until - time.monotonic())
        return stats

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
        if self._queue is None:
            return
        while len(self._workers) < count:
            self._spawn_worker()
        # Idle workers retire now; busy ones retire after their item.
        excess = len(self._workers) - len(self._retiring) - count
        self._shrinking = excess > 0
        for worker_id in sorted(self._idle_workers - self._retiring)[: max(excess, 0)]:
            self._retiring.add(worker_id)
            self._workers[worker_id].cancel()

    async def cancel(self) -> None:
        """Stop now: cancel the workers; items under way get no result."""
        self._closed = True
        for task in list(self._workers.values()):
            task.cancel()
        if self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)
        self._workers.clear()
        await self._complete(cancelled=True)

    async def shutdown(self) -> None:
        """Cancel anything still running and clean up every prepared strategy."""
        await self.cleanup()

    async def cleanup(self) -> None:
        if self._workers:
            await self.cancel()
        if self._cooldown_handle is not None:
            self._cooldown_handle.cancel()
            self._cooldown_handle = None
            self._cooling = False
        await self._cleanup_strategies()
        await self._events.drain()
        self._events.close()

    # ----------------------------------------------------------------- workers

    def _start_workers(self, *, streaming: bool) -> None:
        self._started = True
        self._streaming = streaming
        cfg = self.config
        self._queue = asyncio.Queue(maxsize=cfg.max_queue_size if streaming else 0)
        self._gate = asyncio.Event()
        if not self._paused:
            self._gate.set()
        self._refresh_admission()
        self._finished = asyncio.Event()
        self._stats.start_time = time.time()
        self._start_monotonic = time.perf_counter()
        if self._events.observers:
            self._events.emit(
                _EV.BATCH_STARTED,
                {
                    "total": self._added,
                    "max_workers": self._target_workers,
                    "start_time": self._stats.start_time,
                    "streaming": streaming,
                },
            )
        for _ in range(self._target_workers):
            self._spawn_worker()

    def _spawn_worker(self) -> None:
        worker_id = self._next_worker_id
        self._next_worker_id += 1
        task = asyncio.get_running_loop().create_task(self._worker(worker_id))
        self._workers[worker_id] = task

    async def _worker(self, worker_id: int) -> None:
        emit = self._events.emit if self._events.observers else None
        if emit:
            emit(_EV.WORKER_STARTED, {"worker_id": worker_id})
        backlog, queue = self._backlog, self._queue
        assert queue is not None
        process, count, results = self._process_item, self._count, self._results
        # Results need the awaited path only for a post-processor, progress or a stream.
        deliver = (
            self._deliver
            if self.post_processor or self.progress_callback or self._result_queue
            else None
        )
        collect = self._collect
        idle = self._idle_workers
        observers_lagging = self._events.lagging if self._events.has_async_observers else None
        done = 0
        try:
            while not self._shrinking or self._keeps_worker():
                if backlog:
                    item = backlog.popleft()
                    index = self._backlog_taken
                    self._backlog_taken = index + 1
                else:
                    idle.add(worker_id)
                    try:
                        entry = await queue.get()
                    except asyncio.CancelledError:
                        if worker_id in self._retiring:
                            break  # set_max_workers retired this idle worker
                        raise
                    finally:
                        idle.discard(worker_id)
                    if entry is _STOP:
                        queue.put_nowait(_STOP)  # pass it on to the next worker
                        break
                    index, item = entry
                try:
                    result = await process(item, index, worker_id)
                except Exception as exc:  # an engine bug must cost one item, never the run
                    logger.exception("internal error on item %r", item.item_id)
                    result = await self._fail(
                        item, index, worker_id, exc, 0, time.perf_counter(), None, "internal_error"
                    )
                count(result)
                if deliver is not None:
                    await deliver(result)
                elif collect:
                    results.append(result)
                done += 1
                if not done % _YIELD_EVERY:
                    # Calls that finish without awaiting (dry runs, caches) never suspend:
                    # let the other workers, the store's writer and timers have the loop.
                    await asyncio.sleep(0)
                    if observers_lagging is not None and observers_lagging():
                        await self._events.drain()  # bounded memory: wait for a slow observer
        finally:
            self._workers.pop(worker_id, None)
            self._retiring.discard(worker_id)
            if emit:
                emit(_EV.WORKER_STOPPED, {"worker_id": worker_id})
        if not self._workers and self._closed:
            await self._complete()  # the last worker out ends the run

    def _keeps_worker(self) -> bool:
        """While shrinking, whether the asking worker carries on (no: it retires now)."""
        if len(self._workers) - len(self._retiring) > self._target_workers:
            return False
        self._shrinking = False
        return True

    # ----------------------------------------------------------------- one item

    async def _process_item(
        self, item: LLMWorkItem[TInput, TOutput, TContext], index: int, worker_id: int
    ) -> WorkItemResult[TOutput, TContext]:
        started = _perf_counter()
        cfg = self.config
        strategy = item.strategy
        dry_run = cfg.dry_run
        if not dry_run and id(strategy) not in self._prepared:  # a dry run calls nothing
            error = await self._prepare(strategy)
            if error is not None:
                return await self._fail(
                    item, index, worker_id, error, 0, started, None, "prepare_error"
                )
        timeout = cfg.timeout_per_item
        state = RetryState()
        usage_in = usage_out = usage_cached = 0
        cost: float | None = None
        metadata: dict[str, Any] | None = None
        attempt = 0  # calls made
        counted = 0  # calls that count against max_attempts
        rate_limited = 0
        pacer = self._pacer
        on_started = self._on_started
        shapes = self._shapes
        cooldowns = self._cooldowns
        while True:
            work = item
            if self.middlewares:
                before = await self._before_process(item)
                if before is None:
                    return await self._fail(
                        item,
                        index,
                        worker_id,
                        None,
                        attempt,
                        started,
                        (usage_in, usage_out, usage_cached, cost),
                        "skipped",
                    )
                work = before
            # Nothing awaits between admission and the call: no attempt starts in a cooldown.
            estimate = 0
            if not self._admit_freely:
                estimate = await self._admit(work)
                pacer = self._pacer  # it may have been created since (learned limits)
            attempt += 1
            counted += 1
            sent_generation = cooldowns.generation
            if on_started is not None:
                on_started({"item_id": item.item_id, "worker_id": worker_id, "attempt": attempt})
            deadline: asyncio.Timeout | None = None
            try:
                strategy = work.strategy
                shape = shapes.get(type(strategy)) or self._shape_of(strategy)
                call: Any
                if dry_run:
                    call = strategy.dry_run(work.prompt)
                elif shape[0] == POSITIONAL:
                    call = strategy.execute(work.prompt, attempt, timeout, state)
                elif shape[0] == NO_STATE:  # written for the API before ``state``
                    call = strategy.execute(work.prompt, attempt, timeout)
                else:
                    call = strategy.execute(work.prompt, attempt, timeout, state=state)
                # Step the call once in place: one that finishes without awaiting needs no
                # timer; one that awaits carries on under the per-attempt timeout.
                try:
                    first = call.send(None)
                except StopIteration as done:
                    returned: Any = done.value
                else:
                    deadline = asyncio.timeout(timeout)
                    async with deadline:
                        returned = await ResumedCoroutine(call, first)
                if (
                    type(returned) is not tuple and not isinstance(returned, tuple)
                ) or not 2 <= len(returned) <= 3:
                    raise StrategyReturnError(
                        f"{type(work.strategy).__name__}.execute must return (output, usage) or "
                        f"(output, usage, metadata), got {type(returned).__name__}"
                    )
            except _CANCELLED:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                exc: Exception = RuntimeError("the call was cancelled from inside the strategy")
            except TimeoutError as error:
                exc = error
                if deadline is not None and deadline.expired():
                    exc = FrameworkTimeoutError(
                        f"attempt {attempt} of item {item.item_id!r} ran past "
                        f"timeout_per_item={timeout}s",
                        item_id=item.item_id,
                        elapsed=_perf_counter() - started,
                        timeout_limit=timeout,
                    )
            except Exception as error:
                exc = error
            else:
                usage = returned[1]
                if len(returned) == 3:
                    extra = returned[2]
                else:  # a CallResult carries its metadata as an attribute
                    extra = None if type(returned) is tuple else getattr(returned, "metadata", None)
                if extra:
                    metadata = extra
                    limits = extra.get("rate_limits")
                    if limits is not None:
                        self._learn_limits(limits)
                    call_cost = extra.get("cost")
                    if call_cost is not None:
                        cost = (cost or 0.0) + call_cost
                if usage:
                    usage_in += usage.get("input_tokens", 0)
                    usage_out += usage.get("output_tokens", 0)
                    usage_cached += usage.get("cached_input_tokens", 0)
                if pacer is not None:
                    pacer.settle(estimate, usage.get("total_tokens", 0) if usage else 0)
                if cooldowns.consecutive:
                    cooldowns.succeeded()
                result = WorkItemResult(
                    item.item_id,
                    True,
                    returned[0],
                    None,
                    item.context,
                    {
                        "input_tokens": usage_in,
                        "output_tokens": usage_out,
                        "total_tokens": usage_in + usage_out,
                        "cached_input_tokens": usage_cached,
                    },
                    metadata.get("gemini_safety_ratings") if metadata else None,
                    attempt,
                    None,
                    _perf_counter() - started,
                    cost,
                    metadata,
                    index,
                )
                if self.middlewares:
                    result = await self._after_process(result)
                if self._on_completed is not None:
                    self._emit_completed(result, worker_id)
                return result

            # ---- the attempt failed
            failed_usage = failed_attempt_usage(exc)
            if failed_usage:
                usage_in += failed_usage.get("input_tokens", 0)
                usage_out += failed_usage.get("output_tokens", 0)
                usage_cached += failed_usage.get("cached_input_tokens", 0)
                failed_cost = failed_usage.get("cost")
                if failed_cost is not None:
                    cost = (cost or 0.0) + failed_cost
            if pacer is not None:
                pacer.settle(estimate, failed_usage.get("total_tokens", 0) if failed_usage else 0)
            limits = getattr(exc, "rate_limits", None)
            if limits is not None:
                self._learn_limits(limits)
            error_info = self._classify(work.strategy, exc)
            try:
                await self._on_error(work.strategy, exc, attempt, state)
            except Exception:
                logger.exception("strategy.on_error failed for item %r", item.item_id)
            totals = (usage_in, usage_out, usage_cached, cost)
            if error_info.is_rate_limit:
                rate_limited += 1
                counted -= 1
                self._stats.rate_limit_count += 1
                if self._on_rate_limit is not None:
                    self._on_rate_limit(
                        {
                            "item_id": item.item_id,
                            "worker_id": worker_id,
                            "attempt": attempt,
                            "error": _describe(exc),
                            "suggested_wait": error_info.suggested_wait,
                        },
                    )
                if rate_limited > cfg.rate_limit.max_rate_limit_retries:
                    limit_exc = RateLimitRetriesExceeded(
                        f"rate-limited {rate_limited} times (max_rate_limit_retries="
                        f"{cfg.rate_limit.max_rate_limit_retries}): {_describe(exc)}"
                    )
                    return await self._fail(
                        item, index, worker_id, limit_exc, attempt, started, totals, "rate_limit"
                    )
                try:
                    cooldowns.check_wait(error_info, _describe(exc))
                except RateLimitTooLong as too_long:
                    return await self._fail(
                        item, index, worker_id, too_long, attempt, started, totals, "rate_limit"
                    )
                await self._start_cooldown(worker_id, error_info, sent_generation)
                continue
            if not error_info.is_retryable or counted >= cfg.retry.max_attempts:
                return await self._fail(
                    item, index, worker_id, exc, attempt, started, totals, error_info.error_category
                )
            wait = (
                0.0
                if error_info.error_category == "validation_error"
                else self._backoff(counted + 1)
            )
            self._stats.retry_count += 1
            if self._on_retry is not None:
                self._on_retry(
                    {
                        "item_id": item.item_id,
                        "worker_id": worker_id,
                        "attempt": attempt,
                        "wait": wait,
                        "error_type": type(exc).__name__,
                        "error_category": error_info.error_category,
                        "error": _describe(exc),
                        "tokens": failed_usage,
                    },
                )
            if wait > 0:
                await asyncio.sleep(wait)

    async def _admit(self, item: LLMWorkItem[TInput, TOutput, TContext]) -> int:
        """Wait until an attempt may start: no pause, no cooldown, slow start and pacing done.

        Returns the token estimate booked with the pacer. The gate is checked again after
        every wait, so an attempt never starts while a cooldown begun meanwhile is in force.
        """
        gate, pacer = self._gate, self._pacer
        assert gate is not None
        estimate = 0
        while True:
            while not gate.is_set():
                await gate.wait()
            if self._slow_start_count >= 0:
                await self._slow_start_delay()
            if pacer is not None:
                estimate = item.strategy.estimate_tokens(item.prompt)
                await pacer.acquire(estimate)
            if gate.is_set():
                return estimate
            if pacer is not None:
                pacer.settle(estimate, 0)

    def _backoff(self, next_attempt: int) -> float:
        retry = self.config.retry
        wait = retry.wait_before(next_attempt)
        if retry.jitter:
            wait *= random.uniform(0.5, 1.0)
        return wait

    def _classify(self, strategy: Any, exc: Exception) -> ErrorInfo:
        if isinstance(exc, StrategyReturnError):
            return ErrorInfo(False, False, False, "invalid_strategy_return")
        chosen = (
            self.error_classifier
            or getattr(strategy, "error_classifier", None)
            or self._default_classifier
        )
        try:
            return chosen.classify(exc)
        except Exception:
            logger.exception("error classifier %r failed; using the default", chosen)
            return self._default_classifier.classify(exc)

    async def _prepare(self, strategy: Any) -> BaseException | None:
        """Prepare a strategy once (under a lock); a failure is returned, and retried next time."""
        key = id(strategy)
        entry = self._strategies.get(key)
        if entry is None:
            entry = (strategy, _Strategy())
            self._strategies[key] = entry
        info = entry[1]
        async with info.lock:
            if info.prepared:
                return None
            try:
                await strategy.prepare()
            except Exception as exc:
                logger.warning("prepare() of strategy %r failed: %s", strategy, exc)
                return exc
            info.prepared = True
            self._prepared.add(key)
        return None

    def _shape_of(self, strategy: Any) -> tuple[int, int]:
        """How ``strategy``'s class takes ``state`` (inspected once per class)."""
        shape = self._shapes[type(strategy)] = call_shape(strategy)
        return shape

    async def _on_error(
        self, strategy: Any, exc: Exception, attempt: int, state: RetryState
    ) -> None:
        """The strategy's ``on_error``, with or without ``state`` as its class declares."""
        passing = (self._shapes.get(type(strategy)) or self._shape_of(strategy))[1]
        if passing == POSITIONAL:
            await strategy.on_error(exc, attempt, state)
        elif passing == NO_STATE:
            await strategy.on_error(exc, attempt)
        else:
            await strategy.on_error(exc, attempt, state=state)

    async def _ensure_strategy_prepared(self, strategy: Any) -> None:
        """Prepare ``strategy`` once (the reference's name); a failed prepare raises."""
        error = await self._prepare(strategy)
        if error is not None:
            raise error

    async def _cleanup_strategies(self) -> None:
        """Clean up every prepared strategy once (the reference's name)."""
        for strategy, info in list(self._strategies.values()):
            if info.prepared:
                info.prepared = False
                try:
                    await strategy.cleanup()
                except Exception as error:  # one failure must not skip the others
                    logger.warning(
                        "cleanup() of strategy %s failed: %s",
                        type(strategy).__name__,
                        error,
                        exc_info=True,
                    )
        self._prepared.clear()

    async def _before_process(
        self, item: LLMWorkItem[TInput, TOutput, TContext]
    ) -> LLMWorkItem[TInput, TOutput, TContext] | None:
        work: LLMWorkItem[TInput, TOutput, TContext] | None = item
        for middleware in self.middlewares:
            try:
                work = await middleware.before_process(work)  # type: ignore[arg-type]
            except Exception:
                logger.exception("middleware %r before_process failed; skipped", middleware)
                continue
            if work is None:
                return None
        return work

    # ----------------------------------------------------------------- outcomes

    async def _after_process(
        self, result: WorkItemResult[TOutput, TContext]
    ) -> WorkItemResult[TOutput, TContext]:
        """Each middleware's ``after_process`` on a success, in reverse order."""
        for middleware in reversed(self.middlewares):
            try:
                result = await middleware.after_process(result)
            except Exception:
                logger.exception("middleware %r after_process failed; skipped", middleware)
        return result

    def _emit_completed(self, result: WorkItemResult[TOutput, TContext], worker_id: int) -> None:
        self._on_completed(  # type: ignore[misc]
            {
                "item_id": result.item_id,
                "worker_id": worker_id,
                "duration": result.duration,
                "attempts": result.attempts,
                "tokens": result.token_usage,
                "cost": result.cost,
                "result": result,
            },
        )

    async def _fail(
        self,
        item: LLMWorkItem[TInput, TOutput, TContext],
        index: int,
        worker_id: int,
        exc: BaseException | None,
        attempts: int,
        started: float,
        totals: tuple[int, int, int, float | None] | None,
        category: str,
    ) -> WorkItemResult[TOutput, TContext]:
        usage_in, usage_out, cached, cost = totals or (0, 0, 0, None)
        if exc is None:
            message, error_type = "Skipped by middleware", "ItemSkipped"
        else:
            message, error_type = _describe(exc), type(exc).__name__
        result: WorkItemResult[TOutput, TContext] | None = None
        if exc is not None and self.middlewares and isinstance(exc, Exception):
            for middleware in self.middlewares:
                try:
                    result = await middleware.on_error(item, exc)
                except Exception:
                    logger.exception("middleware %r on_error failed; skipped", middleware)
                    continue
                if result is not None:
                    break
        usage: TokenUsage = {
            "input_tokens": usage_in,
            "output_tokens": usage_out,
            "total_tokens": usage_in + usage_out,
            "cached_input_tokens": cached,
        }
        if result is not None:
            result.attempts = result.attempts or attempts
            result.input_index = index
            if result.success:
                if self._on_completed is not None:
                    self._emit_completed(result, worker_id)
                return result
        else:
            result = WorkItemResult(
                item.item_id,
                False,
                None,
                message,
                item.context,
                usage,
                None,
                attempts,
                category,
                time.perf_counter() - started,
                cost,
                None,
                index,
            )
        if self._on_failed is not None:
            self._on_failed(
                {
                    "item_id": item.item_id,
                    "worker_id": worker_id,
                    "error": result.error,
                    "error_type": error_type,
                    "error_category": result.error_category or category,
                    "attempts": attempts,
                    "duration": result.duration,
                    "tokens": result.token_usage,
                    "cost": result.cost,
                    "result": result,
                },
            )
        return result

    def _count(self, result: WorkItemResult[TOutput, TContext]) -> None:
        """Add one result to the run's counters."""
        stats = self._stats
        stats.processed += 1
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

    async def _deliver(self, result: WorkItemResult[TOutput, TContext]) -> None:
        """Run the post-processor and progress callback, then hand the result on."""
        stats = self._stats
        if self.post_processor is not None:
            await self._run_post_processor(result)
        if self.progress_callback is not None:
            processed = stats.processed
            if processed - self._last_progress >= self.config.progress_interval or (
                self._closed and processed == self._added
            ):
                self._last_progress = processed
                await self._call_progress(processed, self._added, result.item_id)
        if self._result_queue is not None:
            await self._result_queue.put(result)
        elif self._collect:
            self._results.append(result)

    async def _run_post_processor(self, result: WorkItemResult[TOutput, TContext]) -> None:
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
        if self._finished is not None:
            self._finished.set()
        stats = self._stats
        stats.end_time = time.time()
        if self._events.observers:
            self._events.emit(
                _EV.BATCH_COMPLETED,
                {
                    "processed": stats.processed,
                    "succeeded": stats.succeeded,
                    "failed": stats.failed,
                    "total": self._added,
                    "total_tokens": stats.total_tokens,
                    "cached_input_tokens": stats.cached_input_tokens,
                    "duration": time.perf_counter() - self._start_monotonic,
                    "cancelled": cancelled,
                },
            )
        queue = self._result_queue
        if cancelled:
            self._end_result_stream()  # never waits on a full buffer nobody reads
        elif queue is not None and not self._stream_ended and not self._stop_sent:
            await queue.put(_STOP)
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
        consecutive = cooldowns.consecutive + 1
        policy = 0.0
        if provider_wait(info) is None:
            try:
                policy = await self.rate_limit_strategy.on_rate_limit(worker_id, consecutive)
            except Exception:
                logger.exception("rate_limit_strategy.on_rate_limit failed; no cooldown")
        duration, consecutive = cooldowns.begin(info, policy)
        now = time.monotonic()
        self._cooldown_until = now + duration
        if self._pacer is not None:
            self._pacer.defer_until(now + duration)
        self._cooldown_handle = asyncio.get_running_loop().call_later(
            duration, self._end_cooldown, duration
        )
        if self._events.observers:
            self._events.emit(
                _EV.COOLDOWN_STARTED,
                {
                    "worker_id": worker_id,
                    "duration": duration,
                    "consecutive": consecutive,
                    "until": time.time() + duration,
                    "provider_wait": provider_wait(info),
                },
            )

    def _learn_limits(self, limits: Any) -> None:
        """Pace the run to the limits the provider declared on a response.

        With no rpm/tpm configured the run paces itself to the declaration; with both, to
        the lower. Observers hear of it when the pace moves, and at most once a second.
        """
        pacer = self._pacer
        if pacer is None:
            pacer = self._pacer = Pacer(None, None)
            self._refresh_admission()
        changed = pacer.learn(limits)
        now = time.monotonic()
        if self._on_limits is None or not (changed or now - self._limits_emitted >= 1.0):
            return
        self._limits_emitted = now
        self._on_limits(
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

    def _end_cooldown(self, duration: float) -> None:
        self._cooldown_handle = None
        self._cooling = False
        self._cooldown_until = 0.0
        self._slow_start_count = 0
        if not self._paused and self._gate is not None:
            self._gate.set()
        self._refresh_admission()
        if self._events.observers:
            self._events.emit(_EV.COOLDOWN_ENDED, {"duration": duration})

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
            and self._pacer is None
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
            await asyncio.sleep(delay)


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
