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
