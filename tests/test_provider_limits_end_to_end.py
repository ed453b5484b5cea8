"""Issue 10's checks against an independent provider: every item through the native transport
with the tokens, cached tokens and cost the provider reported; and pacing to declared limits.

The provider (tests/independent_provider.py) answers each prompt with a usage of its own
(``usage_for``); prices are read from litellm's bundled price table as data.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
from collections import Counter, deque
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from async_batch_llm import (
    LLMCallStrategy,
    ParallelBatchProcessor,
    ProcessorConfig,
    RateLimitConfig,
    RetryState,
    TokenUsage,
)
from async_batch_llm.core.pacing import Pacer
from async_batch_llm.providers.limits import ProviderLimits
from async_batch_llm.testing import VirtualClock
from async_batch_llm.testing.fake import FakeRateLimitError
from independent_provider import CREATION_TOKENS, answer_for, running_provider, usage_for
from support import ABL, PROCESS_TIMEOUT, cli_env, results_by_id


@cache
def _prices(model: str) -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None
    table = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    entry: dict[str, Any] = json.loads(table.read_text())[model]
    return entry


def _expected_cost(model: str, prompt: str) -> float:
    """What the provider's reported usage costs at the price table's rates."""
    price = _prices(model)
    total, cached, completion = usage_for(prompt)
    if model.startswith("claude"):
        fresh = total - cached - CREATION_TOKENS
        prompt_cost = (
            fresh * price["input_cost_per_token"]
            + cached * price["cache_read_input_token_cost"]
            + CREATION_TOKENS * price["cache_creation_input_token_cost"]
        )
    else:
        prompt_cost = (total - cached) * price["input_cost_per_token"] + cached * price[
            "cache_read_input_token_cost"
        ]
    return float(prompt_cost + completion * price["output_cost_per_token"])


@pytest.mark.parametrize(
    ("model", "variable", "wire_model"),
    [
        ("openai/gpt-4o-mini", "OPENAI_API_KEY", "gpt-4o-mini"),
        ("anthropic/claude-haiku-4-5", "ANTHROPIC_API_KEY", "claude-haiku-4-5"),
    ],
)
def test_every_item_is_stored_with_the_usage_and_cost_the_provider_reported(
    tmp_path: Path, model: str, variable: str, wire_model: str
) -> None:
    items = tmp_path / "items.jsonl"
    prompts = {f"i{n:04d}": f"item {n} " + "w" * (n % 37) for n in range(400)}
    items.write_text("".join(json.dumps({"id": k, "prompt": p}) + "\n" for k, p in prompts.items()))
    db = tmp_path / "runs.db"
    with running_provider(tmp_path) as provider:
        base = provider.anthropic_base if model.startswith("anthropic/") else provider.openai_base
        run = subprocess.run(
            [*ABL, "run", str(items), "--db", str(db), "--headless", "--yes", "--model", model,
             "--api-base", base, "--workers", "64"],
            cwd=tmp_path, env=cli_env(**{variable: "sk-test"}), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=PROCESS_TIMEOUT,
        )  # fmt: skip
        paid = provider.paid()
    assert run.returncode == 0, run.stderr
    assert sorted(paid.values()) == [1] * 400  # each item answered once, nothing else sent
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT item_id, status, output, input_tokens, output_tokens, cached_tokens, cost "
            "FROM items"
        ).fetchall()
        totals = conn.execute(
            "SELECT succeeded, input_tokens, output_tokens, cached_tokens, cost FROM runs"
        ).fetchone()
    assert len(rows) == 400
    for item_id, status, output, input_tokens, output_tokens, cached_tokens, cost in rows:
        prompt = prompts[item_id]
        total, cached, completion = usage_for(prompt)
        assert (status, output) == ("succeeded", answer_for(prompt))
        assert (input_tokens, output_tokens, cached_tokens) == (total, completion, cached)
        assert cost == pytest.approx(_expected_cost(wire_model, prompt), rel=1e-9)
    assert totals[0] == 400
    assert totals[1:4] == (
        sum(usage_for(p)[0] for p in prompts.values()),
        sum(usage_for(p)[2] for p in prompts.values()),
        sum(usage_for(p)[1] for p in prompts.values()),
    )
    assert totals[4] == pytest.approx(sum(_expected_cost(wire_model, p) for p in prompts.values()))


def test_an_exhausted_budget_books_nothing_past_its_reset() -> None:
    """A window of 60 requests per 12 s (declared as 300/min) just spent: wait for its reset,
    then pace at the declared rate again; no slot lands far past the reset."""
    pacer = Pacer(None, None)
    pacer.learn(ProviderLimits(requests_limit=300, requests_remaining=0, requests_reset_s=12.0))
    waits = [pacer.requests.reserve() for _ in range(32)] if pacer.requests else [0.0]
    # the budget is full again 12 s later: the provider then allows 60 at once, 5/s after
    pacer.learn(ProviderLimits(requests_limit=300, requests_remaining=59, requests_reset_s=12.0))
    later = pacer.requests.reserve() if pacer.requests else 0.0
    interval = 60.0 / 300
    assert min(waits) >= 12.0 - 0.5  # nothing goes before the reset
    assert max(waits) <= 12.0 + 32 * interval + 1.0
    assert later <= 12.0 + 33 * interval + 1.0


class WindowFull(FakeRateLimitError):
    """The provider's 429: Retry-After and the limits its headers declared."""

    def __init__(self, retry_after: float, declared: ProviderLimits) -> None:
        super().__init__(retry_after=retry_after)
        self.rate_limits = declared


class SlidingWindowProvider(LLMCallStrategy[str]):
    """A provider admitting ``capacity`` requests per sliding ``window`` seconds, in virtual
    time, that says so only in its headers: the limit per minute, what remains of the window
    and when it is fully replenished (OpenAI's ``x-ratelimit-reset-requests``); beyond it, a
    429 with Retry-After. Its ledger is (admission time, status) per request."""

    def __init__(self, clock: VirtualClock, capacity: int, window: float, latency: float) -> None:
        self.clock, self.capacity, self.window, self.latency = clock, capacity, window, latency
        self.admitted: deque[float] = deque()
        self.ledger: list[tuple[float, int]] = []

    def declared(self, now: float) -> ProviderLimits:
        reset = self.admitted[-1] + self.window - now if self.admitted else 0.0
        return ProviderLimits(
            requests_limit=round(self.capacity * 60 / self.window),
            requests_remaining=self.capacity - len(self.admitted),
            requests_reset_s=reset,
        )

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage, dict[str, Any]]:
        await self.clock.sleep(self.latency / 2)
        now = self.clock.now()
        while self.admitted and self.admitted[0] <= now - self.window:
            self.admitted.popleft()
        full = len(self.admitted) >= self.capacity
        self.ledger.append((now, 429 if full else 200))
        if not full:
            self.admitted.append(now)
        declared = self.declared(now)
        await self.clock.sleep(self.latency / 2)
        if full:
            oldest = self.admitted[len(self.admitted) - self.capacity]
            raise WindowFull(oldest + self.window - now, declared)
        return prompt, {"total_tokens": 2}, {"rate_limits": declared}


@pytest.mark.parametrize(
    ("capacity", "window", "items"),
    [(60, 12.0, 401), (300, 60.0, 600)],
    ids=["60-per-12s", "300-per-minute"],
)
async def test_declared_limits_alone_keep_429s_rare_and_the_run_near_the_ideal(
    capacity: int, window: float, items: int
) -> None:
    """Issue 10's target, in virtual time: with no rpm configured, against a server that
    allows 300 requests a minute over a sliding window and says so in its headers, fewer
    than 2% of requests are answered 429 and the run takes at most 1.25x the ideal."""
    clock = VirtualClock()
    provider = SlidingWindowProvider(clock, capacity, window, latency=0.01)
    config = ProcessorConfig(max_workers=32, rate_limit=RateLimitConfig(slow_start_items=0))
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=config, clock=clock
    )
    results = await results_by_id(processor, provider, [f"p{n}" for n in range(items)])
    assert all(r.success for r in results.values())
    statuses = Counter(status for _, status in provider.ledger)
    assert statuses[200] == items
    assert statuses[429] / len(provider.ledger) < 0.02
    ideal = items / (capacity / window)
    elapsed = provider.ledger[-1][0] - provider.ledger[0][0]
    assert elapsed <= 1.25 * ideal
