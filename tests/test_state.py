"""The pure run-state model: engine events folded into what the screens show."""

from __future__ import annotations

from abl_tui.state import MAX_FAILED_ROWS, RateHistory, RunState

T0 = 1_800_000_000.0


def started(state: RunState, item: str, worker: int, at: float, attempt: int = 1) -> None:
    state.apply("item_started", {"item_id": item, "worker_id": worker, "attempt": attempt}, at)


def completed(state: RunState, item: str, worker: int, at: float, tokens: int = 10) -> None:
    usage = {"input_tokens": tokens, "output_tokens": tokens // 2, "cached_input_tokens": 4}
    state.apply(
        "item_completed",
        {"item_id": item, "worker_id": worker, "tokens": usage, "cost": 0.001, "attempts": 1},
        at,
    )


def failed(state: RunState, item: str, worker: int, at: float) -> None:
    state.apply(
        "item_failed",
        {
            "item_id": item,
            "worker_id": worker,
            "error": "BadRequestError: nope",
            "error_category": "bad_request",
            "attempts": 1,
            "tokens": {},
        },
        at,
    )


def test_workers_follow_their_items() -> None:
    state = RunState(total=3)
    state.apply("batch_started", {"total": 3, "max_workers": 2}, T0)
    state.apply("worker_started", {"worker_id": 0}, T0)
    started(state, "a", 0, T0 + 1, attempt=2)
    assert state.workers[0].busy and state.workers[0].item_id == "a"
    assert state.workers[0].attempt == 2 and state.workers[0].since == T0 + 1
    assert state.in_flight == 1
    completed(state, "a", 0, T0 + 2)
    assert not state.workers[0].busy and state.in_flight == 0
    state.apply("worker_stopped", {"worker_id": 0}, T0 + 3)
    assert 0 not in state.workers


def test_counts_tokens_cost_and_cache_hit_rate() -> None:
    state = RunState(total=4)
    completed(state, "a", 0, T0)
    completed(state, "b", 1, T0)
    failed(state, "c", 0, T0)
    assert (state.succeeded, state.failed, state.done, state.remaining) == (2, 1, 3, 1)
    assert state.totals.input_tokens == 20 and state.totals.output_tokens == 10
    assert state.totals.cached_tokens == 8
    assert state.totals.cache_hit_rate == 8 / 20
    assert state.totals.cost_known and abs(state.totals.cost - 0.002) < 1e-12
    assert abs(state.projected_cost() - (0.002 + 0.002 / 3 * 1)) < 1e-12
    assert state.errors_by_category == {"bad_request": 1}


def test_unknown_cost_is_not_zero() -> None:
    state = RunState(total=1)
    state.apply("item_completed", {"item_id": "a", "worker_id": 0, "tokens": {}, "cost": None}, T0)
    assert not state.totals.cost_known
    assert state.projected_cost() is None


def test_failed_table_and_retry_by_hand() -> None:
    state = RunState(total=2)
    failed(state, "a", 0, T0)
    failed(state, "b", 0, T0)
    assert list(state.failed_items) == ["a", "b"] and state.failed == 2
    assert state.requeue(["a", "zzz"]) == 1
    assert list(state.failed_items) == ["b"] and state.failed == 1
    completed(state, "a", 0, T0 + 1)  # the retry succeeded
    failed(state, "b", 0, T0 + 2)  # failing again does not count twice
    assert state.failed == 1 and state.succeeded == 1
    completed(state, "b", 0, T0 + 3)  # a failed item retried live that now succeeds
    assert state.failed == 0 and state.succeeded == 2 and not state.failed_items


def test_failed_table_is_bounded() -> None:
    state = RunState(total=MAX_FAILED_ROWS + 10)
    for n in range(MAX_FAILED_ROWS + 10):
        failed(state, f"i{n}", 0, T0)
    assert len(state.failed_items) == MAX_FAILED_ROWS
    assert next(iter(state.failed_items)) == "i10"  # the oldest rows went first


def test_cooldown_countdown() -> None:
    state = RunState()
    state.apply("rate_limit_hit", {"item_id": "a", "worker_id": 0}, T0)
    state.apply(
        "cooldown_started", {"worker_id": 0, "duration": 5.0, "consecutive": 2, "until": T0 + 5}, T0
    )
    assert state.rate_limits == 1 and state.cooldown_consecutive == 2
    assert state.cooldown_remaining(T0 + 2) == 3.0
    assert state.cooldown_remaining(T0 + 9) == 0.0
    state.apply("cooldown_ended", {"duration": 5.0}, T0 + 5)
    assert state.cooldown_remaining(T0 + 5) == 0.0


def test_rates_eta_and_sparkline() -> None:
    state = RunState(total=1_000)
    state.apply("batch_started", {"total": 1000, "max_workers": 4}, T0)
    for second in range(10):
        for n in range(5):
            completed(state, f"s{second}-{n}", 0, T0 + second + 0.5, tokens=100)
    now = T0 + 10.2
    assert state.items_per_second(now) == 5.0
    assert state.tokens_per_second(now) == 5 * 150
    assert state.eta_seconds(now) == (1_000 - 50) / 5.0
    series = state.completions.series(now, points=12)
    assert series[-10:] == [5.0] * 10 and series[:2] == [0.0, 0.0]
    assert state.elapsed(now) == now - T0


def test_rate_history_skips_idle_seconds() -> None:
    history = RateHistory(seconds=5)
    history.add(T0, 3)
    history.add(T0 + 100, 1)  # a long quiet gap is all zeros, not stale counts
    assert history.series(T0 + 101, points=4) == [0.0, 0.0, 0.0, 1.0]


def test_eta_unknown_without_progress() -> None:
    state = RunState(total=10)
    assert state.eta_seconds(T0) is None


def test_load_seeds_a_resumed_run() -> None:
    state = RunState()
    state.load(
        {
            "run_id": "r-1",
            "name": "demo",
            "total": 10,
            "succeeded": 6,
            "failed": 1,
            "input_tokens": 100,
            "output_tokens": 50,
            "cached_tokens": 20,
            "cost": None,
            "failed_items": [("x", "bad_request", "nope", 1)],
        }
    )
    assert (state.run_id, state.total, state.done, state.remaining) == ("r-1", 10, 7, 3)
    assert list(state.failed_items) == ["x"] and not state.totals.cost_known
    completed(state, "y", 0, T0)
    assert state.succeeded == 7
    assert state.already_done == 7


def test_projected_cost_of_a_resumed_run_counts_earlier_sessions_once() -> None:
    state = RunState()
    state.load({"run_id": "r", "total": 10, "succeeded": 5, "failed": 0, "cost": 0.5})
    completed(state, "a", 0, T0)  # this session: 0.001 per item
    # 0.5 spent + 0.001 for "a" + 4 items left at 0.001 each
    assert abs(state.projected_cost() - (0.501 + 4 * 0.001)) < 1e-12


# ---------------------------------------------------------------------- console fixes (issue 14)


def _started(state: RunState, at: float, workers: int = 4) -> None:
    state.apply("batch_started", {"max_workers": workers}, at)
    for worker in range(workers):
        state.apply("worker_started", {"worker_id": worker}, at)


def test_eta_leaves_paused_seconds_out_and_says_nothing_while_paused() -> None:
    state = RunState(total=100)
    _started(state, 1000.0)
    for second in range(10):  # 2 items a second for 10 s
        for _ in range(2):
            state.apply(
                "item_completed", {"item_id": f"a{second}{_}", "worker_id": 0}, 1000 + second
            )
    assert state.eta_seconds(1010.5) == 80 / 2.0
    state.paused = True
    assert state.eta_seconds(1011.0) is None  # paused: no ETA to tell
    for second in range(1010, 1030):  # 20 s paused: nothing finishes
        state.mark_paused(second + 0.5)
    state.paused = False
    # right after resuming, the rate is the one before the pause, not diluted by it
    assert state.items_per_second(1030.2) == 2.0
    assert state.eta_seconds(1030.2) == 40.0


def test_rates_stop_decaying_once_the_run_has_ended() -> None:
    state = RunState(total=10)
    _started(state, 1000.0)
    for index in range(10):
        state.apply("item_completed", {"item_id": f"i{index}", "worker_id": 0}, 1000.0 + index)
    state.apply("batch_completed", {}, 1010.0)
    assert state.items_per_second(1010.0) == state.items_per_second(5000.0) == 1.0
    assert state.eta_seconds(5000.0) == 0.0


def test_busy_is_items_held_and_reads_the_same_before_and_after_the_end() -> None:
    state = RunState(total=10)
    _started(state, 0.0, workers=24)
    state.apply("item_started", {"item_id": "a", "worker_id": 0, "attempt": 1}, 1.0)
    state.apply("item_started", {"item_id": "b", "worker_id": 1, "attempt": 1}, 1.0)
    state.apply("item_retry", {"item_id": "a", "worker_id": 0, "attempt": 1}, 2.0)
    # a worker waiting to retry its item still holds it (as the engine's worker does)
    assert (state.busy_text(), state.waiting) == ("2/24", 1)
    state.apply("item_started", {"item_id": "a", "worker_id": 0, "attempt": 2}, 3.0)
    assert state.workers[0].since == 1.0  # time on the item, not on this attempt
    for worker in range(24):
        state.apply("worker_stopped", {"worker_id": worker}, 4.0)
    assert state.busy_text() == "0/24"  # the workers have gone: the configured number stays


def test_a_resumed_run_starts_from_its_stored_retries_429s_and_first_start() -> None:
    from types import SimpleNamespace

    from abl_tui.state import stored_run

    run = SimpleNamespace(
        id="r1",
        name="n",
        settings={"model": "m", "workers": 24},
        total=10,
        succeeded=4,
        failed=1,
        input_tokens=100,
        output_tokens=50,
        cached_tokens=0,
        cost=None,
        started_at=500.0,
    )
    state = RunState()
    state.load(stored_run(run, [], {"retry": 7, "rate_limited": 3}))
    assert (state.retries, state.rate_limits, state.max_workers) == (7, 3, 24)
    _started(state, 900.0)
    state.apply("item_retry", {"item_id": "x", "worker_id": 0}, 901.0)
    assert state.retries == 8
    assert state.elapsed(1000.0) == 500.0  # since the run first started


def test_a_hand_retry_counts_the_items_earlier_calls() -> None:
    state = RunState(total=2)
    state.apply("item_failed", {"item_id": "a", "worker_id": 0, "attempts": 3}, 1.0)
    state.requeue(["a"])
    state.apply("item_failed", {"item_id": "a", "worker_id": 0, "attempts": 2}, 2.0)
    assert state.failed_items["a"].attempts == 5  # what the store counts too


def test_failures_by_category_and_the_event_log() -> None:
    state = RunState(total=5)
    for item_id, category in (("a", "timeout"), ("b", "bad_request"), ("c", "timeout")):
        state.apply(
            "item_failed", {"item_id": item_id, "worker_id": 0, "error_category": category}, 1.0
        )
    assert state.failed_by_category() == [("timeout", 2), ("bad_request", 1)]
    version = state.log_version
    state.apply("cooldown_started", {"duration": 30.0, "consecutive": 2}, 5.0)
    state.note(6.0, "paused")
    assert state.log_version == version + 2
    assert [entry.kind for entry in state.log][-2:] == ["limits", "operator"]
    assert "waits 30s" in state.log[-2].text


def test_store_trouble_while_the_run_goes_on_reaches_the_event_log() -> None:
    """The runner's store status (why dispatch waits: disk full, a lock held elsewhere) is
    logged when it appears and when it clears, once each."""
    from abl_tui.model import RunModel

    model = RunModel()
    controls: dict[str, object] = {"paused": False, "max_cost": None, "draining": False}
    controls["budget_note"] = None
    locked = "database locked by pid 4242 (abl-runs.db)"
    for now, note in ((1.0, None), (2.0, locked), (3.0, locked), (4.0, None)):
        model.follow_controls(**controls, now=now, store_note=note)  # type: ignore[arg-type]
    lines = [(entry.kind, entry.text) for entry in model.state.log]
    assert lines == [
        ("store", f"dispatch waits for the run store: {locked}"),
        ("store", "the run store takes writes again: dispatch goes on"),
    ]


def test_an_overflowing_event_buffer_counts_what_it_drops_and_the_log_says_so() -> None:
    """Past its limit the runner's buffer drops the oldest events and counts them; the live
    feed says so once in the event log (the screen's counts may then be short)."""
    from abl_tui.feeds import RunnerFeed
    from abl_tui.model import RunModel
    from abl_tui.runner import EventBuffer
    from app_support import demo_runner
    from async_batch_llm import ProcessingEvent

    buffer = EventBuffer(limit=3)
    for n in range(5):
        buffer.on_event_sync(ProcessingEvent.ITEM_STARTED, {"item_id": f"i{n}", "worker_id": 0})
    assert buffer.dropped == 2 and len(buffer.drain()) == 3
    runner = demo_runner()
    runner.buffer.dropped = 2  # type: ignore[attr-defined]
    runner.ready.set()
    feed, model = RunnerFeed(runner, started=True), RunModel()
    feed.pull(model, 1.0)
    feed.pull(model, 2.0)
    notes = [entry.text for entry in model.state.log if "fell behind" in entry.text]
    assert len(notes) == 1 and "2 events" in notes[0]
