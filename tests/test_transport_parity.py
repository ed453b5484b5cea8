"""The native transport and the litellm transport give the same answers for the same replies.

Each scenario runs twice against fresh loopback simulators, once per transport, through
``LiteLLMStrategy.execute`` (real HTTP both ways), for OpenAI-compatible chat completions
and for Anthropic Messages; the transcripts must be equal: text, structured output, tokens
(cached reads, Anthropic cache writes), cost, declared rate limits, error categories and the
waits the provider asked for.
"""

from __future__ import annotations

import os
from typing import Any

import pydantic
import pytest

from async_batch_llm import LiteLLMErrorClassifier, LiteLLMStrategy
from async_batch_llm.providers._litellm_import import load_litellm
from async_batch_llm.simulator import ProviderSimulator
from async_batch_llm.simulator.profiles import profile_from_name
from support import big_answer_server

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*")

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
load_litellm()

KEY = "parity-key-123456"
MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-haiku-4-5"}
PREFIX = "You are a careful assistant. Answer briefly and precisely. " * 8
classify = LiteLLMErrorClassifier().classify


class Verdict(pydantic.BaseModel):
    label: str
    score: float


SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": ["a", "b"]}, "n": {"type": "integer"}},
    "required": ["category", "n"],
}


def make(sim: ProviderSimulator, protocol: str, transport: str, **kw: Any) -> LiteLLMStrategy:
    """A strategy for ``protocol`` on ``transport`` pointed at ``sim`` (each SDK's convention)."""
    base = sim.base_url if protocol == "openai" else sim.base_url.removesuffix("/v1")
    strategy = LiteLLMStrategy(
        MODELS[protocol], api_base=base, api_key=KEY, transport=transport, **kw
    )
    assert strategy.transport == transport
    return strategy


async def outcome(strategy: LiteLLMStrategy, prompt: str, timeout: float = 5.0) -> Any:
    """What one call gives: ``(output, usage, cost, limits)`` or ``(category, wait)``."""
    try:
        output, usage, metadata = await strategy.execute(prompt, 1, timeout)
    except Exception as exc:
        info = classify(exc)
        wait = None if info.suggested_wait is None else round(info.suggested_wait)
        return ("error", info.error_category, info.is_retryable, wait)
    cost = metadata["cost"]
    return (output, dict(usage), None if cost is None else round(cost, 12), rounded(metadata))


def rounded(metadata: dict[str, Any]) -> Any:
    """The declared limits with resets in whole seconds (the two calls are ms apart)."""
    limits = metadata["rate_limits"]
    if limits is None:
        return None
    return (
        limits.requests_limit,
        limits.requests_remaining,
        round(limits.requests_reset_s),
        limits.tokens_limit,
        limits.tokens_remaining,
        round(limits.tokens_reset_s),
    )


async def transcript(protocol: str, transport: str, prompts: list[str], **kw: Any) -> list[Any]:
    """The outcomes of ``prompts`` in order, against a fresh simulator (cache and limits on)."""
    profile = profile_from_name("fast", cache=True, rpm_limit=1000, tpm_limit=10_000_000)
    async with ProviderSimulator(profile, seed=3) as sim:
        strategy = make(sim, protocol, transport, **kw)
        try:
            return [await outcome(strategy, prompt) for prompt in prompts]
        finally:
            await strategy.cleanup()


def without_limits(items: list[Any]) -> list[Any]:
    """Outcomes with the rate limits dropped (their reset times differ by a few ms)."""
    return [item[:3] if item[0] != "error" else item for item in items]


@pytest.fixture(params=["openai", "anthropic"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def both(protocol: str, prompts: list[str], **kw: Any) -> list[Any]:
    native = await transcript(protocol, "native", prompts, **kw)
    via_litellm = await transcript(protocol, "litellm", prompts, **kw)
    assert native == via_litellm
    return native


async def test_text_tokens_cache_and_cost(protocol: str) -> None:
    prompts = [PREFIX + "first", PREFIX + "second", PREFIX + "third", "short"]
    native = await transcript(protocol, "native", prompts, system_prompt="Be terse.")
    via_litellm = await transcript(protocol, "litellm", prompts, system_prompt="Be terse.")
    assert without_limits(native) == without_limits(via_litellm)
    first, second = native[0], native[1]
    assert first[0].startswith("sim reply to You are a careful")
    assert second[1]["cached_input_tokens"] > 0  # the shared prefix was read from cache
    assert all(item[2] is not None and item[2] > 0 for item in native)  # priced models
    limits = [item[3] for item in native]
    assert [lim[:2] for lim in limits] == [(1000, 999), (1000, 998), (1000, 997), (1000, 996)]
    assert [lim[2] for lim in limits] == [60] * 4  # the window is full again in 60 s
    assert limits == [item[3] for item in via_litellm]


async def test_anthropic_cache_writes_are_billed_the_same() -> None:
    prompts = [PREFIX * 2 + "one", PREFIX * 2 + "two"]
    native = await both("anthropic", prompts)
    # the first call writes the prefix to the cache (dearer than input), the second reads it
    assert native[0][1]["cached_input_tokens"] == 0
    assert native[1][1]["cached_input_tokens"] > 0
    assert native[0][2] > native[1][2]


async def test_structured_output(protocol: str) -> None:
    [(verdict, *_)] = without_limits(await both(protocol, ["judge"], response_model=Verdict))
    assert verdict == Verdict(label="sim", score=0)
    [(value, *_)] = without_limits(await both(protocol, ["pick"], response_schema=SCHEMA))
    assert value == {"category": "a", "n": 0}


STATUSES = [400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529]
EXPECTED = {
    400: "bad_request",
    401: "auth",
    403: "auth",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "bad_request",
    422: "bad_request",
    429: "rate_limit",
    500: "server_error",
    502: "server_error",
    503: "overloaded",
    504: "timeout",
    529: "overloaded",
}


async def test_error_categories_of_every_status(protocol: str) -> None:
    prompts = [f"status {status} [[sim:{status}:retry_after=2]]" for status in STATUSES]
    native = await both(protocol, prompts)
    assert [item[1] for item in native] == [EXPECTED[s] for s in STATUSES]


FAULTS = {
    "[[sim:reset]]": "connection_error",
    "[[sim:malformed]]": "malformed_response",
    "[[sim:no_choices]]": "malformed_response",
    "[[sim:empty_choices]]": "malformed_response",
    "[[sim:null_content]]": "malformed_response",
    "[[sim:context_window]]": "context_window",
    "[[sim:quota]]": "insufficient_quota",
}


async def test_faults_without_a_status(protocol: str) -> None:
    native = await both(protocol, [f"fault {directive}" for directive in FAULTS])
    assert [item[1] for item in native] == list(FAULTS.values())
    assert all(
        item[2] == (value not in ("context_window", "insufficient_quota"))
        for item, value in zip(native, FAULTS.values(), strict=True)
    )


async def test_timeout_is_the_same_category(protocol: str) -> None:
    results = []
    for transport in ("native", "litellm"):
        async with ProviderSimulator("fast") as sim:
            strategy = make(sim, protocol, transport)
            results.append(await outcome(strategy, "late [[sim:slow=3]]", timeout=0.3))
            await strategy.cleanup()
    assert results[0] == results[1] == ("error", "timeout", True, None)


RETRY_FORMS = {
    "both": 7,  # retry-after-ms 7000 and Retry-After 7
    "seconds": 7,
    "ms": 7,
    "date": 7,  # an HTTP date 7 s ahead (rounded: the clock moves)
    "reset": 80,  # x-ratelimit-reset-requests: 1m20s with 0 requests left
}


async def test_retry_after_in_every_form(protocol: str) -> None:
    waits = {"reset": 80}
    prompts = [
        f"wait {form} [[sim:429:retry_after={waits.get(form, 7)}:form={form}]]"
        for form in RETRY_FORMS
    ]
    native = await transcript(protocol, "native", prompts)
    via_litellm = await transcript(protocol, "litellm", prompts)
    for got in (native, via_litellm):
        assert [item[1] for item in got] == ["rate_limit"] * len(RETRY_FORMS)
        seen = dict(zip(RETRY_FORMS, [item[3] for item in got], strict=True))
        assert seen.pop("date") in (6, 7)  # an HTTP date has whole seconds; the clock moves
        assert seen == {form: wait for form, wait in RETRY_FORMS.items() if form != "date"}


async def test_errors_carry_the_declared_rate_limits(protocol: str) -> None:
    for transport in ("native", "litellm"):
        profile = profile_from_name("fast", rpm_limit=2)
        async with ProviderSimulator(profile) as sim:
            strategy = make(sim, protocol, transport)
            await strategy.execute("one", 1, 5)
            await strategy.execute("two", 1, 5)
            with pytest.raises(Exception) as caught:
                await strategy.execute("three", 1, 5)
            await strategy.cleanup()
        info = classify(caught.value)
        assert info.is_rate_limit and info.suggested_wait is not None, transport
        limits = caught.value.rate_limits  # type: ignore[attr-defined]
        assert (limits.requests_limit, limits.requests_remaining) == (2, 0), transport


async def test_an_answer_over_the_size_cap_is_the_same_category(protocol: str) -> None:
    """Over a 64 KiB cap, with Content-Length and chunked: ``response_too_large``, not retried,
    on both transports; an answer under the cap is the same text on both."""
    prompts = [f"SIZE={1024 * 1024}", f"SIZE={1024 * 1024} CHUNKED", f"SIZE={8 * 1024} CHUNKED"]
    got = {}
    async with big_answer_server() as base:
        if protocol == "anthropic":
            base = base.removesuffix("/v1")
        for transport in ("native", "litellm"):
            strategy = LiteLLMStrategy(
                MODELS[protocol],
                api_base=base,
                api_key=KEY,
                transport=transport,
                max_response_bytes=64 * 1024,
            )
            got[transport] = [(await outcome(strategy, prompt))[:3] for prompt in prompts]
            await strategy.cleanup()
    assert got["native"] == got["litellm"]
    too_large = ("error", "response_too_large", False)
    assert got["native"][:2] == [too_large, too_large]
    assert got["native"][2][0] == "y" * 8 * 1024
