"""LiteLLMStrategy in the engine, over real HTTP to the loopback simulator, on both transports.

Every test that builds its strategy with :func:`strategy_for` runs twice: on the native
transport and through litellm (the ``transport`` fixture), with the same expectations.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import pydantic
import pytest

from async_batch_llm import (
    BaseMiddleware,
    BaseObserver,
    BatchResult,
    LiteLLMErrorClassifier,
    LiteLLMStrategy,
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
    RateLimitConfig,
    RetryConfig,
)
from async_batch_llm.providers import _litellm_import
from async_batch_llm.providers._litellm_import import load_litellm
from async_batch_llm.providers._simulated import shared_simulator
from async_batch_llm.simulator import ProviderSimulator
from async_batch_llm.simulator.profiles import profile_from_name
from support import big_answer_server

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*")

litellm = load_litellm()

FAKE_KEY = "test-key-123"
SHARED_PREFIX = "You are a careful assistant. Answer briefly and precisely. " * 8


class Recorder(BaseObserver):
    """Keeps every event payload, by event."""

    def __init__(self) -> None:
        self.events: list[tuple[ProcessingEvent, dict[str, Any]]] = []

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.events.append((event, data))

    def of(self, event: ProcessingEvent) -> list[dict[str, Any]]:
        return [data for ev, data in self.events if ev is event]


class Answer(pydantic.BaseModel):
    a: int
    b: str


def config(**overrides: Any) -> ProcessorConfig:
    """Tiny retry waits; the default 300 s cooldown stays, to prove Retry-After is used."""
    retry = RetryConfig(max_attempts=3, initial_wait=0.01, max_wait=0.02)
    rate_limit = RateLimitConfig(slow_start_items=0)
    overrides.setdefault("max_workers", 4)
    overrides.setdefault("timeout_per_item", 5.0)
    return ProcessorConfig(retry=retry, rate_limit=rate_limit, **overrides)


async def run(
    strategy: LiteLLMStrategy,
    prompts: Iterable[str],
    *,
    observers: list[Any] | None = None,
    middlewares: list[Any] | None = None,
    **overrides: Any,
) -> tuple[BatchResult[Any, Any], dict[str, Any]]:
    """Process one item per prompt (item id = prompt); return the batch and the stats."""
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=config(**overrides), observers=observers, middlewares=middlewares
    )
    async with processor:
        for prompt in prompts:
            await processor.add_work(LLMWorkItem(prompt, strategy, prompt))
        result = await processor.process_all()
        stats = await processor.get_stats()
    return result, stats


def by_id(result: BatchResult[Any, Any]) -> dict[str, Any]:
    return {r.item_id: r for r in result.results}


@pytest.fixture
async def sim() -> Any:
    async with ProviderSimulator("fast", seed=1) as running:
        yield running


@pytest.fixture
async def cached_sim() -> Any:
    async with ProviderSimulator(profile_from_name("fast", cache=True), seed=1) as running:
        yield running


TRANSPORT = {"name": "native"}


@pytest.fixture(autouse=True, params=["native", "litellm"])
def transport(request: pytest.FixtureRequest) -> Any:
    """The transport :func:`strategy_for` builds strategies on, for this run of the test."""
    TRANSPORT["name"] = request.param
    yield request.param
    TRANSPORT["name"] = "native"


def strategy_for(sim: ProviderSimulator, model: str = "openai/sim-model", **kw: Any) -> Any:
    kw.setdefault("transport", TRANSPORT["name"])
    strategy = LiteLLMStrategy(model, api_base=sim.base_url, api_key=FAKE_KEY, **kw)
    assert strategy.transport == kw["transport"]
    return strategy


# --- outcomes ------------------------------------------------------------------------------


async def test_success_returns_text_usage_and_metadata(sim: ProviderSimulator) -> None:
    result, _ = await run(strategy_for(sim), ["hello", "world"])
    assert result.succeeded == 2
    hello = by_id(result)["hello"]
    assert hello.output == "sim reply to hello"
    assert hello.attempts == 1
    assert hello.metadata["model"] == "openai/sim-model"
    assert hello.metadata["response_id"].startswith("chatcmpl-sim-")
    assert result.total_tokens == sim.totals()["total_tokens"]


async def test_rate_limit_cooldown_follows_retry_after(sim: ProviderSimulator) -> None:
    recorder = Recorder()
    result, stats = await run(
        strategy_for(sim), ["[[sim:429:retry_after=0.2 x1]] limited"], observers=[recorder]
    )
    assert result.succeeded == 1
    cooldowns = recorder.of(ProcessingEvent.COOLDOWN_STARTED)
    assert [c["duration"] for c in cooldowns] == [pytest.approx(0.2)]  # not the 300 s default
    assert stats["rate_limit_count"] == 1
    assert by_id(result)["[[sim:429:retry_after=0.2 x1]] limited"].attempts == 2
    assert sim.requests_by_prompt() == {"[[sim:429:retry_after=0.2 x1]] limited": ["429", "ok"]}


async def test_503s_are_retried(sim: ProviderSimulator) -> None:
    recorder = Recorder()
    prompt = "[[sim:503 x2]] busy"
    result, _ = await run(strategy_for(sim), [prompt], observers=[recorder])
    assert by_id(result)[prompt].success
    assert by_id(result)[prompt].attempts == 3
    assert sim.requests_by_prompt()[prompt] == ["503", "503", "ok"]
    retries = recorder.of(ProcessingEvent.ITEM_RETRY)
    assert [r["error_category"] for r in retries] == ["overloaded", "overloaded"]


async def test_bad_request_fails_at_once_after_one_request(sim: ProviderSimulator) -> None:
    prompt = "[[sim:400]] nonsense"
    result, _ = await run(strategy_for(sim), [prompt])
    failed = by_id(result)[prompt]
    assert not failed.success
    assert failed.error_category == "bad_request"
    assert failed.attempts == 1
    assert sim.requests_by_prompt()[prompt] == ["400"]


async def test_insufficient_quota_fails_at_once(sim: ProviderSimulator) -> None:
    prompt = "[[sim:quota]] broke"
    result, stats = await run(strategy_for(sim), [prompt])
    assert by_id(result)[prompt].error_category == "insufficient_quota"
    assert stats["rate_limit_count"] == 0
    assert sim.requests_by_prompt()[prompt] == ["quota"]


async def test_malformed_body_is_retried(sim: ProviderSimulator) -> None:
    recorder = Recorder()
    prompt = "[[sim:malformed x1]] garbled"
    result, _ = await run(strategy_for(sim), [prompt], observers=[recorder])
    assert by_id(result)[prompt].success
    assert sim.requests_by_prompt()[prompt] == ["malformed", "ok"]
    assert [r["error_category"] for r in recorder.of(ProcessingEvent.ITEM_RETRY)] == [
        "malformed_response"
    ]


async def test_connection_reset_is_retried(sim: ProviderSimulator) -> None:
    prompt = "[[sim:reset x1]] dropped"
    result, _ = await run(strategy_for(sim), [prompt])
    assert by_id(result)[prompt].success
    assert sim.requests_by_prompt()[prompt] == ["reset", "ok"]


async def test_slow_answer_times_out_and_is_retried(sim: ProviderSimulator) -> None:
    recorder = Recorder()
    prompt = "[[sim:slow=3 x1]] sluggish"
    result, _ = await run(strategy_for(sim), [prompt], observers=[recorder], timeout_per_item=0.3)
    assert by_id(result)[prompt].success
    assert by_id(result)[prompt].attempts == 2  # the 3 s answer was not waited for
    # the transport's clock and the engine's (timeout_per_item) run out together: either wins
    retry = recorder.of(ProcessingEvent.ITEM_RETRY)
    assert len(retry) == 1 and retry[0]["error_category"] in ("timeout", "framework_timeout")
    assert sim.count("ok", prompt) == 1


# --- tokens, caching, exactly-once ----------------------------------------------------------


async def test_token_and_cached_totals_equal_the_ledger(cached_sim: ProviderSimulator) -> None:
    strategy = strategy_for(cached_sim, system_prompt=SHARED_PREFIX)
    prompts = [f"question {i}" for i in range(24)] + ["[[sim:503 x1]] flaky question"]
    result, stats = await run(strategy, prompts, max_workers=1)
    ledger = cached_sim.totals()
    assert result.succeeded == 25
    assert ledger["cached_tokens"] > 0  # the shared system prompt was served from cache
    assert result.total_input_tokens == ledger["prompt_tokens"]
    assert result.total_output_tokens == ledger["completion_tokens"]
    assert result.total_cached_tokens == ledger["cached_tokens"]
    assert stats["total_tokens"] == ledger["total_tokens"]
    assert stats["total_cached_tokens"] == ledger["cached_tokens"]


async def test_no_item_is_sent_again_after_it_succeeded(sim: ProviderSimulator) -> None:
    faults = ["", "[[sim:503 x1]] ", "[[sim:malformed x1]] ", "[[sim:reset x1]] "]
    prompts = [f"{faults[i % 4]}item {i}" for i in range(40)]
    result, _ = await run(strategy_for(sim), prompts, max_workers=8)
    assert result.succeeded == 40
    outcomes = sim.requests_by_prompt()
    assert set(outcomes) == set(prompts)
    for prompt, seen in outcomes.items():
        assert seen.count("ok") == 1, (prompt, seen)
        assert seen[-1] == "ok", (prompt, seen)


# --- structured output ----------------------------------------------------------------------


async def test_response_model_returns_a_validated_instance(sim: ProviderSimulator) -> None:
    result, _ = await run(strategy_for(sim, response_model=Answer), ["structured"])
    assert by_id(result)["structured"].output == Answer(a=0, b="sim")  # the schema's example


async def test_invalid_reply_is_retried_with_its_tokens_billed(sim: ProviderSimulator) -> None:
    prompt = "never valid [[sim:reply=not json at all]]"
    recorder = Recorder()
    result, _ = await run(strategy_for(sim, response_model=Answer), [prompt], observers=[recorder])
    failed = by_id(result)[prompt]
    assert not failed.success
    assert failed.error_category == "validation_error"
    assert failed.attempts == 3
    assert "does not match Answer" in (failed.error or "")
    ledger = sim.totals()
    assert ledger["requests"] == 3  # answered 200 each time: the tokens were spent
    assert failed.token_usage["input_tokens"] == ledger["prompt_tokens"]
    assert failed.token_usage["output_tokens"] == ledger["completion_tokens"]
    assert [r["wait"] for r in recorder.of(ProcessingEvent.ITEM_RETRY)] == [0.0, 0.0]


SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": ["a", "b"]}, "score": {"type": "number"}},
    "required": ["category", "score"],
}


async def test_response_schema_returns_json_that_fits(sim: ProviderSimulator) -> None:
    result, _ = await run(strategy_for(sim, response_schema=SCHEMA), ["schema"])
    output = by_id(result)["schema"].output
    assert output["category"] in ("a", "b") and isinstance(output["score"], int | float)


async def test_reply_outside_the_schema_is_retried_and_billed(sim: ProviderSimulator) -> None:
    prompt = 'off schema [[sim:reply={"category": "zzz", "score": 1}]]'
    result, _ = await run(strategy_for(sim, response_schema=SCHEMA), [prompt])
    failed = by_id(result)[prompt]
    assert not failed.success and failed.error_category == "validation_error"
    assert failed.attempts == 3 and "'zzz' is not one of" in (failed.error or "")
    assert failed.token_usage["input_tokens"] == sim.totals()["prompt_tokens"]


def test_response_schema_and_response_model_are_exclusive() -> None:
    with pytest.raises(ValueError, match="one of response_model, response_schema"):
        LiteLLMStrategy("openai/x", response_model=Answer, response_schema=SCHEMA)


class DropReplyOnRetry(BaseMiddleware[Any, Any, Any]):
    """Sends the prompt with its ``reply=`` directive on the first attempt only."""

    def __init__(self) -> None:
        self.calls = 0

    async def before_process(self, work_item: LLMWorkItem[Any, Any, Any]) -> Any:
        self.calls += 1
        if self.calls == 1:
            return work_item
        prompt = work_item.prompt.split("[[sim:reply=")[0]
        return LLMWorkItem(work_item.item_id, work_item.strategy, prompt, work_item.context)


async def test_validation_failure_then_success_counts_both_attempts(
    sim: ProviderSimulator,
) -> None:
    prompt = 'fix me [[sim:reply={"a": "not a number"}]]'
    result, _ = await run(
        strategy_for(sim, response_model=Answer), [prompt], middlewares=[DropReplyOnRetry()]
    )
    item = by_id(result)[prompt]
    assert item.success and item.attempts == 2
    assert item.output == Answer(a=0, b="sim")
    ledger = sim.totals()
    assert ledger["requests"] == 2
    assert item.token_usage["input_tokens"] == ledger["prompt_tokens"]
    assert item.token_usage["output_tokens"] == ledger["completion_tokens"]
    assert item.token_usage["total_tokens"] == ledger["total_tokens"]


# --- cost -----------------------------------------------------------------------------------


async def test_cost_of_a_model_in_the_cost_map(sim: ProviderSimulator) -> None:
    strategy = strategy_for(sim, model="openai/gpt-4o-mini")
    result, stats = await run(strategy, ["what does this cost?"])
    item = by_id(result)["what does this cost?"]
    assert item.cost is not None and item.cost > 0
    usage = item.token_usage
    prompt_cost, completion_cost = litellm.cost_per_token(
        model="gpt-4o-mini",
        prompt_tokens=usage["input_tokens"],
        completion_tokens=usage["output_tokens"],
    )
    assert item.cost == pytest.approx(prompt_cost + completion_cost)
    direct = await litellm.acompletion(
        model="openai/gpt-4o-mini",
        api_base=sim.base_url,
        api_key=FAKE_KEY,
        messages=[{"role": "user", "content": "what does this cost?"}],
        max_retries=0,
        timeout=5,
    )
    assert item.cost == pytest.approx(litellm.completion_cost(completion_response=direct))
    assert item.metadata["cost"] == item.cost
    assert stats["total_cost"] == pytest.approx(item.cost)
    assert result.total_cost == pytest.approx(item.cost)


async def test_cost_of_an_unknown_model_is_none_not_zero(sim: ProviderSimulator) -> None:
    result, stats = await run(strategy_for(sim, model="openai/no-such-model"), ["a", "b"])
    assert result.succeeded == 2
    assert [r.cost for r in result.results] == [None, None]
    assert [r.metadata["cost"] for r in result.results] == [None, None]
    assert stats["total_cost"] is None
    assert result.total_cost is None


# --- secrets and noise ----------------------------------------------------------------------


async def test_api_key_never_shown(
    sim: ProviderSimulator, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    strategy = strategy_for(sim, model="openai/gpt-4o-mini")
    assert FAKE_KEY not in repr(strategy) and "***" in repr(strategy)
    assert FAKE_KEY not in str(vars(strategy))
    prompts = ["[[sim:401]] who", "[[sim:400]] what", "[[sim:503]] busy", "fine"]
    result, _ = await run(strategy, prompts)
    assert result.succeeded == 1
    texts = [caplog.text, *(str(r.error) for r in result.results)]
    texts += [str(r.metadata) for r in result.results]
    assert all(FAKE_KEY not in text for text in texts)
    out, err = capfd.readouterr()
    assert FAKE_KEY not in out + err
    assert "Give Feedback" not in out + err  # litellm's banner stays off the terminal


async def test_processor_picks_the_litellm_classifier(sim: ProviderSimulator) -> None:
    assert isinstance(LiteLLMStrategy.error_classifier, LiteLLMErrorClassifier)
    result, _ = await run(strategy_for(sim), ["[[sim:404]] gone"])
    assert by_id(result)["[[sim:404]] gone"].error_category == "not_found"  # default: client_error


# --- routing, construction, laziness ---------------------------------------------------------


async def test_simulated_model_routes_to_a_shared_in_process_simulator() -> None:
    strategy = LiteLLMStrategy("simulated/fast")
    before = len(shared_simulator("fast").ledger)
    result, _ = await run(strategy, ["routed 1", "routed 2"])
    assert result.succeeded == 2
    assert by_id(result)["routed 1"].output == "sim reply to routed 1"
    assert by_id(result)["routed 1"].cost is None
    simulator = shared_simulator("fast")
    assert strategy.api_base == simulator.base_url
    entries = simulator.ledger[before:]
    assert {e.model for e in entries} == {"sim-fast"}
    assert sorted(e.last_user_message for e in entries) == ["routed 1", "routed 2"]
    assert LiteLLMStrategy("simulated/fast").estimate_tokens("x" * 40) > 10


def test_unknown_simulated_profile_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown simulator profile"):
        LiteLLMStrategy("simulated/nope")


@pytest.mark.parametrize("name", ["max_retries", "num_retries", "timeout", "messages", "stream"])
def test_keywords_the_engine_owns_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        LiteLLMStrategy("openai/gpt-4o-mini", **{name: 1})


def test_estimate_counts_prompt_system_prompt_and_max_tokens() -> None:
    bare = LiteLLMStrategy("openai/gpt-4o-mini")
    full = LiteLLMStrategy("openai/gpt-4o-mini", system_prompt="s" * 400, max_tokens=256)
    assert 100 <= bare.estimate_tokens("p" * 400) <= 110
    assert full.estimate_tokens("p" * 400) - bare.estimate_tokens("p" * 400) >= 100 + 256


def _imports_litellm(body: str) -> bool:
    """Run ``body`` (inside ``async def main``) in a fresh interpreter: was litellm imported?"""
    code = (
        "import asyncio, sys\n"
        "from async_batch_llm import LiteLLMStrategy, LiteLLMErrorClassifier\n"
        "from async_batch_llm import ParallelBatchProcessor, LLMWorkItem, ProcessorConfig\n"
        "async def main():\n"
        "    s = LiteLLMStrategy('openai/gpt-4o-mini', api_key='k' * 8)\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
        + "asyncio.run(main())\n"
        "print('litellm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


def test_construction_classifier_and_dry_run_do_not_import_litellm() -> None:
    body = (
        "out, usage = await s.dry_run('hello')\n"
        "assert usage['total_tokens'] == 150\n"
        "LiteLLMErrorClassifier().classify(ValueError('x'))\n"
        "s.estimate_tokens('hello')\n"
        "repr(s)"
    )
    assert not _imports_litellm(body)


async def test_processor_dry_run_does_not_load_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    monkeypatch.setattr(_litellm_import, "loaded", lambda: None)
    monkeypatch.setattr(_litellm_import, "load_litellm", lambda: loads.append("load") or litellm)
    result, _ = await run(LiteLLMStrategy("openai/gpt-4o-mini"), ["hello"], dry_run=True)
    assert result.succeeded == 1
    assert loads == []


def test_warm_up_makes_one_offline_mock_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(_litellm_import, "_warmed", False)
    monkeypatch.setattr(litellm, "completion", lambda **kw: calls.append(kw))
    _litellm_import.warm_up("openai/gpt-4o-mini")
    _litellm_import.warm_up("openai/gpt-4o-mini")
    assert len(calls) == 1
    assert calls[0]["mock_response"] == "ok"  # no HTTP


def test_warm_up_is_skipped_when_callbacks_would_log_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(_litellm_import, "_warmed", False)
    monkeypatch.setattr(litellm, "completion", lambda **kw: calls.append(kw))
    monkeypatch.setattr(litellm, "success_callback", ["some-logger"])
    _litellm_import.warm_up("openai/gpt-4o-mini")
    assert calls == []
    assert _litellm_import.warmed()


def test_simulator_seed_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from async_batch_llm.providers._simulated import SEED_ENV, simulator_seed

    monkeypatch.delenv(SEED_ENV, raising=False)
    assert simulator_seed() == 0
    monkeypatch.setenv(SEED_ENV, "42")
    assert simulator_seed() == 42
    monkeypatch.setenv(SEED_ENV, "forty-two")
    with pytest.raises(ValueError, match=SEED_ENV):
        simulator_seed()


# --- the answer size cap --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["", "CHUNKED"])
async def test_an_answer_over_the_cap_fails_its_item_at_once(transport: str, mode: str) -> None:
    """Through the engine with 3 attempts allowed: one call, ``response_too_large``, a message
    naming the size and the cap; an answer under the cap passes. litellm read the whole
    answer, so its tokens are billed; the native transport stopped reading: unknown."""
    huge, small = f"SIZE={2 * 1024 * 1024} {mode}", f"SIZE={16 * 1024} {mode}"
    async with big_answer_server() as base:
        strategy = LiteLLMStrategy(
            "openai/gpt-4o-mini",
            api_base=base,
            api_key=FAKE_KEY,
            transport=transport,
            max_response_bytes=64 * 1024,
        )
        result, _ = await run(strategy, [huge, small])
        await strategy.cleanup()
    failed, passed = by_id(result)[huge], by_id(result)[small]
    assert passed.success and passed.output == "y" * 16 * 1024
    assert not failed.success and failed.attempts == 1
    assert failed.error_category == "response_too_large"
    assert "64.0 KiB cap" in str(failed.error) and "max_response_mb" in str(failed.error)
    if transport == "litellm":
        assert "is 2.0 MiB, over" in str(failed.error)
        assert (failed.token_usage["input_tokens"], failed.token_usage["output_tokens"]) == (5, 7)
    else:
        assert "billed for this call are unknown" in str(failed.error)
        assert failed.token_usage["input_tokens"] == 0
