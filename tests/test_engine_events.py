"""Events and observers: payloads, sequences, isolation, failure and hang tolerance, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from async_batch_llm import (
    BaseMiddleware,
    BaseObserver,
    LLMWorkItem,
    MetricsObserver,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
)
from async_batch_llm.testing import FakeStrategy

EV = ProcessingEvent
Config = Callable[..., ProcessorConfig]

REQUIRED_KEYS: dict[ProcessingEvent, set[str]] = {
    EV.LIMITS_LEARNED: {
        "requests_limit",
        "requests_remaining",
        "requests_reset_s",
        "tokens_limit",
        "tokens_remaining",
        "tokens_reset_s",
        "rpm",
        "tpm",
    },
    EV.BATCH_STARTED: {"total", "max_workers", "start_time"},
    EV.WORKER_STARTED: {"worker_id"},
    EV.WORKER_STOPPED: {"worker_id"},
    EV.ITEM_STARTED: {"item_id", "worker_id", "attempt"},
    EV.ITEM_COMPLETED: {"item_id", "duration", "tokens"},
    EV.ITEM_FAILED: {"item_id", "error_type", "error_category"},
    EV.ITEM_RETRY: {"item_id", "attempt", "wait", "error_type"},
    EV.RATE_LIMIT_HIT: {"item_id", "worker_id"},
    EV.COOLDOWN_STARTED: {"worker_id", "duration", "consecutive"},
    EV.COOLDOWN_ENDED: {"duration"},
    EV.BATCH_COMPLETED: {
        "processed",
        "succeeded",
        "failed",
        "total",
        "total_tokens",
        "cached_input_tokens",
        "duration",
    },
}

SCRIPT = {
    "ok": [],
    "retry": ["server_error", "ok"],
    "limited": ["rate_limit:0.01", "ok"],
    "bad": ["bad_request"],
}


async def run_items(
    prompts: list[str],
    config: ProcessorConfig,
    observers: list[Any],
    strategy: FakeStrategy | None = None,
    **kwargs: Any,
) -> Any:
    strategy = strategy or FakeStrategy(script=SCRIPT)
    processor = ParallelBatchProcessor(config=config, observers=observers, **kwargs)
    async with processor:
        for prompt in prompts:
            await processor.add_work(LLMWorkItem(prompt, strategy, prompt))
        return await processor.process_all()


def test_event_values_are_lower_case_names() -> None:
    assert {e.name.lower() for e in ProcessingEvent} == {e.value for e in ProcessingEvent}
    assert set(REQUIRED_KEYS) == set(ProcessingEvent)


async def test_every_event_emitted_with_contract_payload(
    fast_config: Config, recorder: Any
) -> None:
    await run_items(list(SCRIPT), fast_config(max_workers=2), [recorder])
    # LIMITS_LEARNED needs a provider that declares its limits: test_engine_learned_limits.
    assert set(recorder.events) == set(ProcessingEvent) - {EV.LIMITS_LEARNED}
    for event, data in ((ev, d) for _, ev, d in recorder.records):
        missing = REQUIRED_KEYS[event] - data.keys()
        assert not missing, f"{event.value} lacks {missing}: {data}"


async def test_payload_values(fast_config: Config, recorder: Any) -> None:
    strategy = FakeStrategy(
        script=SCRIPT,
        usage={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "cached_input_tokens": 3,
        },
    )
    await run_items(list(SCRIPT), fast_config(max_workers=2), [recorder], strategy)

    started = recorder.of(EV.BATCH_STARTED)
    assert len(started) == 1
    assert started[0]["total"] == 4 and started[0]["max_workers"] == 2
    assert isinstance(started[0]["start_time"], float)

    worker_ids = {d["worker_id"] for d in recorder.of(EV.WORKER_STARTED)}
    assert len(worker_ids) == 2
    assert {d["worker_id"] for d in recorder.of(EV.WORKER_STOPPED)} == worker_ids

    attempts = {}
    for data in recorder.of(EV.ITEM_STARTED):
        assert data["worker_id"] in worker_ids
        attempts.setdefault(data["item_id"], []).append(data["attempt"])
    assert attempts == {"ok": [1], "retry": [1, 2], "limited": [1, 2], "bad": [1]}

    completed = {d["item_id"]: d for d in recorder.of(EV.ITEM_COMPLETED)}
    assert set(completed) == {"ok", "retry", "limited"}
    for data in completed.values():
        assert data["duration"] >= 0
        assert data["tokens"]["input_tokens"] == 10
        assert data["tokens"]["total_tokens"] == 15

    (failed,) = recorder.of(EV.ITEM_FAILED)
    assert failed["item_id"] == "bad"
    assert failed["error_type"] == "FakeBadRequestError"
    assert failed["error_category"] == "client_error"

    (retry,) = recorder.of(EV.ITEM_RETRY)
    assert retry["item_id"] == "retry" and retry["attempt"] == 1
    assert retry["error_type"] == "FakeServerError"
    assert 0 <= retry["wait"] <= 0.001

    (hit,) = recorder.of(EV.RATE_LIMIT_HIT)
    assert hit["item_id"] == "limited" and hit["worker_id"] in worker_ids

    (cooldown,) = recorder.of(EV.COOLDOWN_STARTED)
    assert cooldown["worker_id"] == hit["worker_id"]
    assert cooldown["duration"] == pytest.approx(0.01)
    assert cooldown["consecutive"] == 1
    (ended,) = recorder.of(EV.COOLDOWN_ENDED)
    assert ended["duration"] == pytest.approx(0.01)

    (done,) = recorder.of(EV.BATCH_COMPLETED)
    assert (done["processed"], done["succeeded"], done["failed"], done["total"]) == (4, 3, 1, 4)
    assert done["total_tokens"] == 45
    assert done["cached_input_tokens"] == 9
    assert done["duration"] > 0


async def test_batch_completed_is_the_last_event(fast_config: Config, recorder: Any) -> None:
    """Observers (the run store, the dashboard) treat BATCH_COMPLETED as the end of a run."""
    await run_items(["ok", "retry", "bad"], fast_config(max_workers=3), [recorder])
    assert recorder.events[0] is EV.BATCH_STARTED
    assert recorder.events[-1] is EV.BATCH_COMPLETED
    assert recorder.events.count(EV.BATCH_COMPLETED) == 1


# --------------------------------------------------------------------------- sequences

ITEM_SEQUENCES = {
    "ok": [EV.ITEM_STARTED, EV.ITEM_COMPLETED],
    "retry": [EV.ITEM_STARTED, EV.ITEM_RETRY, EV.ITEM_STARTED, EV.ITEM_COMPLETED],
    "exhausted": [
        EV.ITEM_STARTED,
        EV.ITEM_RETRY,
        EV.ITEM_STARTED,
        EV.ITEM_RETRY,
        EV.ITEM_STARTED,
        EV.ITEM_FAILED,
    ],
    "bad": [EV.ITEM_STARTED, EV.ITEM_FAILED],
    "limited": [EV.ITEM_STARTED, EV.RATE_LIMIT_HIT, EV.ITEM_STARTED, EV.ITEM_COMPLETED],
}


@pytest.mark.parametrize("item", list(ITEM_SEQUENCES))
async def test_event_sequence_per_outcome(fast_config: Config, recorder: Any, item: str) -> None:
    strategy = FakeStrategy(script={**SCRIPT, "exhausted": ["server_error"] * 3})
    await run_items([item], fast_config(max_workers=1), [recorder], strategy)
    assert recorder.for_item(item) == ITEM_SEQUENCES[item]
    assert recorder.events[:2] == [EV.BATCH_STARTED, EV.WORKER_STARTED]
    assert recorder.events.count(EV.WORKER_STOPPED) == 1
    assert recorder.events.count(EV.BATCH_COMPLETED) == 1


async def test_event_sequence_for_middleware_skip(fast_config: Config, recorder: Any) -> None:
    class Skip(BaseMiddleware[Any, Any, Any]):
        async def before_process(self, work_item: Any) -> None:
            return None

    await run_items(["ok"], fast_config(max_workers=1), [recorder], middlewares=[Skip()])
    assert recorder.for_item("ok") == [EV.ITEM_FAILED]
    (failed,) = recorder.of(EV.ITEM_FAILED)
    assert failed["error_type"] and failed["error_category"]
    assert recorder.of(EV.BATCH_COMPLETED)[0]["failed"] == 1


async def test_item_failed_on_rate_limit_budget_exhaustion(
    fast_config: Config, recorder: Any
) -> None:
    strategy = FakeStrategy(script={"x": ["rate_limit:0.001"] * 10})
    await run_items(
        ["x"],
        fast_config(max_workers=1, rate_limit={"max_rate_limit_retries": 2}),
        [recorder],
        strategy,
    )
    assert recorder.for_item("x")[-1] is EV.ITEM_FAILED
    assert recorder.of(EV.ITEM_FAILED)[0]["error_category"] == "rate_limit"


# --------------------------------------------------------------------------- isolation


class Mutating(BaseObserver):
    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        data.pop("item_id", None)
        data["worker_id"] = "clobbered"
        data.clear()


async def test_each_observer_gets_its_own_dict(fast_config: Config, recorder: Any) -> None:
    first, last = Mutating(), Mutating()
    middle = type(recorder)()
    await run_items(["ok", "retry"], fast_config(), [first, recorder, middle, last])
    for rec in (recorder, middle):
        assert rec.records
        for event, data in ((ev, d) for _, ev, d in rec.records):
            assert REQUIRED_KEYS[event] <= data.keys()
            assert data.get("worker_id") != "clobbered"
    first_payloads = [d for _, _, d in recorder.records]
    middle_payloads = [d for _, _, d in middle.records]
    assert all(a is not b for a, b in zip(first_payloads, middle_payloads, strict=True))


class Raising(BaseObserver):
    def __init__(self, after_await: bool) -> None:
        self.after_await = after_await
        self.calls = 0

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.calls += 1
        if self.after_await:
            await asyncio.sleep(0)
        raise RuntimeError("observer broke")


@pytest.mark.parametrize("after_await", [False, True])
async def test_raising_observer_is_skipped(
    fast_config: Config, recorder: Any, after_await: bool
) -> None:
    broken = Raising(after_await)
    batch = await run_items(list(SCRIPT), fast_config(), [broken, recorder])
    assert batch.total_items == 4 and batch.succeeded == 3
    assert broken.calls == len(recorder.records)
    assert recorder.events.count(EV.BATCH_COMPLETED) == 1


async def test_sync_on_event_is_skipped_not_fatal(fast_config: Config, recorder: Any) -> None:
    class NotAsync(BaseObserver):
        def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:  # type: ignore[override]
            return None

    batch = await run_items(["ok", "retry"], fast_config(), [NotAsync(), recorder])
    assert batch.succeeded == 2
    assert EV.BATCH_COMPLETED in recorder.events


class Hanging(BaseObserver):
    def __init__(self) -> None:
        self.entered = 0
        self.cancelled = 0

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.entered += 1
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_hanging_observer_does_not_stop_the_run(fast_config: Config, recorder: Any) -> None:
    hanging = Hanging()
    batch = await asyncio.wait_for(
        run_items(
            ["ok", "retry", "limited", "bad"],
            fast_config(observer_timeout=0.05),
            [hanging, recorder],
        ),
        10,
    )
    assert batch.total_items == 4 and batch.succeeded == 3
    assert recorder.events.count(EV.BATCH_COMPLETED) == 1
    assert hanging.entered >= 1
    # Every hanging delivery was abandoned (cancelled) once the observer timeout passed.
    assert hanging.cancelled == hanging.entered


async def test_hanging_observer_does_not_hold_the_end_of_the_run(fast_config: Config) -> None:
    """Abandoning a hung observer must not cost the run one observer_timeout per event.

    With 60 items (some 180 events) and observer_timeout=0.05, waiting out the timeout
    event after event would hold the run for about 9 s; the guard below is only a hang
    guard, some 25 times what abandoning the observer needs.
    """
    hanging = Hanging()
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=4, observer_timeout=0.05), observers=[hanging]
    )
    strategy = FakeStrategy()
    for n in range(60):
        await processor.add_work(LLMWorkItem(f"i{n}", strategy, "p"))
    # No `async with`: its cleanup would wait for the observer all over again on failure.
    batch = await asyncio.wait_for(processor.process_all(), 3)
    assert batch.total_items == 60 and batch.succeeded == 60
    await asyncio.wait_for(processor.shutdown(), 3)
    assert hanging.cancelled == hanging.entered


async def test_observer_using_its_own_timeout_does_not_hurt_workers(
    fast_config: Config, recorder: Any
) -> None:
    """An observer may guard its own slow work with asyncio.timeout (e.g. a store write).

    The guard must cancel the observer's own work, never the worker that emitted the event.
    """

    class Guarded(BaseObserver):
        def __init__(self) -> None:
            self.timeouts = 0

        async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
            if event is EV.ITEM_STARTED:
                try:
                    async with asyncio.timeout(0.01):
                        await asyncio.sleep(0.2)
                except TimeoutError:
                    self.timeouts += 1

    guarded = Guarded()
    strategy = FakeStrategy(latency=0.05)
    batch = await asyncio.wait_for(
        run_items([f"i{n}" for n in range(4)], fast_config(), [guarded, recorder], strategy),
        10,
    )
    assert batch.total_items == 4
    assert batch.succeeded == 4
    assert guarded.timeouts == 4


async def test_slow_but_progressing_observer_is_never_abandoned(fast_config: Config) -> None:
    """The watchdog abandons a delivery that makes no progress, not a slow observer.

    Each event takes under half the observer timeout, so all of them together take many
    timeouts; none may be cut short or skipped.
    """

    class Slow(BaseObserver):
        def __init__(self) -> None:
            self.finished = 0

        async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
            await asyncio.sleep(0.02)
            self.finished += 1

    slow = Slow()
    prompts = [f"i{n}" for n in range(6)]
    await run_items(prompts, fast_config(max_workers=2, observer_timeout=0.06), [slow])
    # started + completed per item, worker start/stop, batch start/end: all delivered.
    assert slow.finished == 2 * len(prompts) + 2 * 2 + 2


async def test_delivery_after_an_abandoned_hang_carries_on(fast_config: Config) -> None:
    """Once a hung delivery is abandoned, later events reach the observer again."""

    class HangsOnce(BaseObserver):
        def __init__(self) -> None:
            self.events: list[ProcessingEvent] = []
            self.hung = False

        async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
            if event is EV.ITEM_STARTED and not self.hung:
                self.hung = True
                await asyncio.Event().wait()  # never set: abandoned by the watchdog
            self.events.append(event)

    observer = HangsOnce()
    strategy = FakeStrategy(latency=0.2)
    batch = await asyncio.wait_for(
        run_items(["a"], fast_config(max_workers=1, observer_timeout=0.05), [observer], strategy),
        10,
    )
    assert batch.succeeded == 1
    assert observer.hung
    assert EV.ITEM_COMPLETED in observer.events and EV.BATCH_COMPLETED in observer.events


async def test_wanted_events_limits_what_an_observer_gets(
    fast_config: Config, recorder: Any
) -> None:
    class OutcomesOnly(type(recorder)):  # type: ignore[misc]
        wanted_events = frozenset((EV.ITEM_COMPLETED, EV.ITEM_FAILED))

    outcomes = OutcomesOnly()
    await run_items(list(SCRIPT), fast_config(), [outcomes, recorder])
    assert sorted(e.value for e in outcomes.events) == sorted(
        e.value for e in recorder.events if e in (EV.ITEM_COMPLETED, EV.ITEM_FAILED)
    )
    assert outcomes.events.count(EV.ITEM_COMPLETED) == 3
    assert outcomes.events.count(EV.ITEM_FAILED) == 1


async def test_borrowing_reader_does_not_share_a_dict_between_owners(
    fast_config: Config, recorder: Any
) -> None:
    """MetricsObserver reads the shared payload; the observers that keep one still each
    get a dict of their own, intact."""
    first, last = type(recorder)(), Mutating()
    metrics = MetricsObserver()
    batch = await run_items(list(SCRIPT), fast_config(), [first, metrics, last])
    assert metrics.items_succeeded == batch.succeeded == 3
    assert metrics.items_failed == 1
    for event, data in ((ev, d) for _, ev, d in first.records):
        assert REQUIRED_KEYS[event] <= data.keys()


async def test_a_slow_observer_keeps_memory_bounded_and_loses_nothing(
    fast_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the backlog limit the workers wait for a slow async observer: its queue stays
    near the limit (not the whole run's events) and every event still reaches it."""
    from async_batch_llm.core import events as events_module

    monkeypatch.setattr(events_module, "BACKLOG_LIMIT", 50)

    class Slow(BaseObserver):
        def __init__(self) -> None:
            self.delivered = 0
            self.most_waiting = 0
            self.processor: Any = None

        async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
            waiting = len(self.processor._events._deliveries[0].queue)
            self.most_waiting = max(self.most_waiting, waiting)
            self.delivered += 1
            if self.delivered % 10 == 0:
                await asyncio.sleep(0.001)

    slow = Slow()
    processor = ParallelBatchProcessor(config=fast_config(max_workers=2), observers=[slow])
    slow.processor = processor
    strategy = FakeStrategy()  # answers without awaiting: the workers outrun the observer
    items = 2_000
    async with processor:
        for n in range(items):
            await processor.add_work(LLMWorkItem(f"i{n}", strategy, "p"))
        batch = await processor.process_all()
    assert batch.succeeded == items
    assert slow.delivered == 2 * items + 2 * 2 + 2  # every event, none dropped
    # The limit, plus what two workers emit between two checks (32 items, 2 events each).
    assert slow.most_waiting <= 50 + 2 * 32 * 2 + 2


# --------------------------------------------------------------------------- metrics


async def test_metrics_observer_numbers_and_exports(fast_config: Config) -> None:
    metrics = MetricsObserver()
    strategy = FakeStrategy(script={**SCRIPT, "bad2": ["bad_request"]})
    await run_items([*SCRIPT, "bad2"], fast_config(max_workers=2), [metrics], strategy)

    data = await metrics.get_metrics()
    assert data["items_processed"] == 5
    assert data["items_succeeded"] == 3
    assert data["items_failed"] == 2
    assert data["rate_limits_hit"] == 1
    assert data["retries"] == 1
    assert data["error_counts"] == {"FakeBadRequestError": 2}
    assert data["success_rate"] == pytest.approx(0.6)
    assert data["total_cooldown_time"] == pytest.approx(0.01)
    assert data["processing_times_count"] == 3
    assert len(data["processing_times"]) == 3
    assert data["avg_processing_time"] == pytest.approx(sum(data["processing_times"]) / 3)

    assert await metrics.export_dict() == data
    exported = json.loads(await metrics.export_json())
    assert exported["items_processed"] == 5
    assert exported["error_counts"] == {"FakeBadRequestError": 2}

    text = await metrics.export_prometheus()
    assert "async_batch_llm_items_processed 5" in text
    assert "async_batch_llm_items_failed 2" in text
    assert "async_batch_llm_rate_limits_hit 1" in text
    assert "# TYPE async_batch_llm_items_processed counter" in text
    assert 'async_batch_llm_errors_total{error_type="FakeBadRequestError"} 2' in text

    metrics.reset()
    cleared = await metrics.get_metrics()
    assert cleared["items_processed"] == 0 and cleared["error_counts"] == {}
    assert cleared["success_rate"] == 0.0 and cleared["avg_processing_time"] == 0.0


async def test_metrics_observer_keeps_bounded_samples(fast_config: Config) -> None:
    metrics = MetricsObserver(max_processing_samples=3)
    await run_items([f"i{n}" for n in range(10)], fast_config(), [metrics], FakeStrategy())
    data = await metrics.get_metrics()
    assert data["items_processed"] == 10
    assert len(data["processing_times"]) == 3
    assert data["processing_times_count"] == 10
    with pytest.raises(ValueError):
        MetricsObserver(max_processing_samples=0)


class _NoAwait(BaseObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[ProcessingEvent, str]] = []

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.seen.append((event, data.get("item_id", "")))


class _SyncReader(BaseObserver):
    def __init__(self) -> None:
        self.seen: list[ProcessingEvent] = []

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        raise AssertionError("a class with on_event_sync is called through it")

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.seen.append(event)


async def test_async_observers_get_every_event_in_order_and_sync_ones_in_place(
    fast_config: Callable[..., ProcessorConfig],
) -> None:
    from async_batch_llm.core.events import sync_handler

    awaiting, sync = _NoAwait(), _SyncReader()
    assert sync_handler(awaiting) is None and sync_handler(sync) is not None
    strategy = FakeStrategy()
    async with ParallelBatchProcessor(
        config=fast_config(max_workers=1), observers=[awaiting, sync]
    ) as processor:
        for n in range(3):
            await processor.add_work(LLMWorkItem(f"i{n}", strategy, "p"))
        await processor.process_all()
    item_events = [(e, i) for e, i in awaiting.seen if i]
    assert item_events == [
        (EV.ITEM_STARTED, "i0"), (EV.ITEM_COMPLETED, "i0"),
        (EV.ITEM_STARTED, "i1"), (EV.ITEM_COMPLETED, "i1"),
        (EV.ITEM_STARTED, "i2"), (EV.ITEM_COMPLETED, "i2"),
    ]  # fmt: skip
    assert sync.seen[0] is EV.BATCH_STARTED and sync.seen[-1] is EV.BATCH_COMPLETED
    assert [e for e, _ in awaiting.seen] == sync.seen
