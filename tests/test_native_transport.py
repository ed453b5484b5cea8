"""The native transport on its own: choosing it, keys and base URLs, limits, prices, secrets.

Real HTTP to the loopback simulator; litellm is imported only where a test compares with it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import tracemalloc
from email.utils import formatdate
from typing import Any

import pytest

from async_batch_llm import LiteLLMErrorClassifier, LiteLLMStrategy
from async_batch_llm.providers.endpoints import build_endpoint, resolve_transport
from async_batch_llm.providers.limits import ProviderLimits, parse_duration, parse_rate_limits
from async_batch_llm.providers.litellm_errors import retry_after
from async_batch_llm.providers.pricing import load_price_table, model_price
from async_batch_llm.providers.provider_errors import (
    MissingKeyError,
    ProviderStatusError,
    ResponseTooLargeError,
)
from async_batch_llm.providers.response_cap import DEFAULT_MAX_RESPONSE_BYTES
from async_batch_llm.simulator import ProviderSimulator
from async_batch_llm.simulator.profiles import profile_from_name
from async_batch_llm.strategies.errors import failed_attempt_usage
from support import big_answer_server, cli_env

SECRET = "sk-live-abcdef0123456789"


# --- choosing the transport -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "api_base", "transport", "chosen"),
    [
        ("openai/gpt-4o-mini", None, "auto", "native"),
        ("anthropic/claude-haiku-4-5", None, "auto", "native"),
        ("deepseek/deepseek-chat", None, "auto", "native"),
        ("hosted_vllm/llama", "http://127.0.0.1:8000/v1", "auto", "native"),
        ("simulated/fast", None, "auto", "native"),
        ("gemini/gemini-2.5-flash", None, "auto", "litellm"),
        ("gpt-4o-mini", None, "auto", "litellm"),
        ("openai/gpt-4o-mini", None, "litellm", "litellm"),
        ("custom/model", "http://127.0.0.1:8000/v1", "native", "native"),
    ],
)
def test_resolve_transport(model: str, api_base: str | None, transport: str, chosen: str) -> None:
    assert resolve_transport(model, api_base, transport) == chosen


def test_native_is_refused_where_there_is_none() -> None:
    with pytest.raises(ValueError, match="no native transport"):
        resolve_transport("gemini/gemini-2.5-flash", None, "native")
    with pytest.raises(ValueError, match="transport must be"):
        resolve_transport("openai/x", None, "fast")


@pytest.mark.parametrize("bad", ["127.0.0.1:8000/v1", "ftp://host/v1", "http://", "localhost"])
def test_an_api_base_that_is_not_an_http_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="api_base"):
        LiteLLMStrategy("openai/gpt-4o-mini", api_base=bad)


# --- keys and base URLs from the environment -----------------------------------------------------


def test_keys_and_base_urls_come_from_each_providers_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key-1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "anthropic-key-1")
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    monkeypatch.setenv("TOGETHERAI_API_KEY", "together-key-1")
    openai = build_endpoint("openai/gpt-4o-mini", None, None)
    assert (openai.url, openai.wire_model, openai.key) == (
        "https://api.openai.com/v1/chat/completions",
        "gpt-4o-mini",
        "openai-key-1",
    )
    anthropic = build_endpoint("anthropic/claude-haiku-4-5", None, None)
    assert (anthropic.url, anthropic.key) == (
        "https://api.anthropic.com/v1/messages",
        "anthropic-key-1",
    )
    assert build_endpoint("together_ai/meta/llama", None, None).key == "together-key-1"
    assert build_endpoint("openrouter/a/b", None, "given").wire_model == "a/b"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9998")
    assert build_endpoint("openai/x", None, None).url == "http://127.0.0.1:9999/v1/chat/completions"
    assert build_endpoint("anthropic/x", None, None).url == "http://127.0.0.1:9998/v1/messages"
    assert build_endpoint("openai/x", "http://h/v1/", None).url == "http://h/v1/chat/completions"
    assert SECRET not in repr(build_endpoint("openai/x", None, SECRET))


async def test_a_hosted_provider_without_a_key_fails_as_auth_before_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    monkeypatch.delenv("DEEPSEEK_API_BASE", raising=False)
    strategy = LiteLLMStrategy("deepseek/deepseek-chat")
    with pytest.raises(MissingKeyError, match="DEEPSEEK_API_KEY") as caught:
        await strategy.execute("hi", 1, 5)
    assert LiteLLMErrorClassifier().classify(caught.value).error_category == "auth"


@pytest.mark.parametrize("transport", ["native", "litellm"])
async def test_an_echoed_key_is_redacted_before_it_leaves_the_strategy(
    transport: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    async with ProviderSimulator(profile_from_name("fast", echo_key=True)) as sim:
        strategy = LiteLLMStrategy(
            "openai/gpt-4o-mini", api_base=sim.base_url, api_key=SECRET, transport=transport
        )
        with pytest.raises(Exception) as caught:
            await strategy.execute("[[sim:401]] who am I", 1, 5)
        await strategy.cleanup()
    exc = caught.value
    texts = [str(exc), repr(exc), repr(exc.args), repr(strategy), str(vars(strategy))]
    texts += [caplog.text, *capfd.readouterr()]
    assert "Incorrect API key provided: ***" in str(exc)
    assert all(SECRET not in text for text in texts)
    assert LiteLLMErrorClassifier().classify(exc).error_category == "auth"


# --- limits the provider declares ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6ms", 0.006),
        ("1s", 1.0),
        ("1m20s", 80.0),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("soon", None),
        ("", None),
        ("1m20", None),
    ],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_openai_and_anthropic_limit_headers() -> None:
    openai = parse_rate_limits(
        {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-tokens": "1999000",
            "x-ratelimit-reset-tokens": "1m20s",
        }
    )
    assert openai == ProviderLimits(10000, 9999, pytest.approx(0.006), 2000000, 1999000, 80.0)
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30))
    anthropic = parse_rate_limits(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
            "anthropic-ratelimit-input-tokens-reset": reset,
        }
    )
    assert anthropic is not None
    assert (anthropic.requests_limit, anthropic.requests_remaining) == (50, 49)
    assert (anthropic.tokens_limit, anthropic.tokens_remaining) == (40000, 39000)
    assert 28 <= (anthropic.requests_reset_s or 0) <= 30
    assert parse_rate_limits({"content-type": "application/json"}) is None


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "DATE+20"}, 20.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m20s"}, 80.0),
        (
            {
                "x-ratelimit-remaining-requests": "5",
                "x-ratelimit-reset-requests": "2s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "6ms",
            },
            0.006,
        ),
        ({}, None),
    ],
)
def test_retry_after_of_a_native_429(headers: dict[str, str], wait: float | None) -> None:
    if headers.get("retry-after") == "DATE+20":  # an HTTP date, made now, not at collection
        headers = {"retry-after": formatdate(time.time() + 20, usegmt=True)}
    exc = ProviderStatusError("rate limited", status_code=429, headers=headers)
    got = retry_after(exc)
    assert got == (pytest.approx(wait, abs=1.5) if wait is not None else None)


async def test_successes_carry_the_limits_the_server_announces() -> None:
    async with ProviderSimulator(profile_from_name("fast", rpm_limit=3)) as sim:
        strategy = LiteLLMStrategy("openai/sim", api_base=sim.base_url, api_key="k")
        remaining = []
        for n in range(3):
            _, _, metadata = await strategy.execute(f"call {n}", 1, 5)
            remaining.append(metadata["rate_limits"].requests_remaining)
        with pytest.raises(ProviderStatusError) as caught:
            await strategy.execute("one too many", 1, 5)
        await strategy.cleanup()
    assert remaining == [2, 1, 0]
    limits = ProviderLimits(3, 0, pytest.approx(60, abs=1), None, None, None)
    assert caught.value.rate_limits == limits
    info = LiteLLMErrorClassifier().classify(caught.value)
    assert info.is_rate_limit and 55 <= (info.suggested_wait or 0) <= 61


# --- prices: litellm's table read as data ---------------------------------------------------------


def test_cost_equals_litellms_for_every_priced_chat_model() -> None:
    from async_batch_llm.providers._litellm_import import load_litellm

    litellm = load_litellm()
    from litellm.types.utils import ModelResponse, Usage

    providers = ("openai", "anthropic", "deepseek", "groq", "fireworks_ai", "together_ai")
    checked = 0
    for key, entry in load_price_table().items():
        if not isinstance(entry, dict) or entry.get("litellm_provider") not in providers:
            continue
        provider = entry["litellm_provider"]
        name = key.removeprefix(provider + "/")
        if entry.get("mode") != "chat" or name.startswith(("together-ai-", "fireworks-ai-")):
            continue  # size buckets, not models
        price = model_price(provider, name)
        if (
            entry.get("off_peak_pricing")
            or entry.get("tiered_pricing")
            or entry.get("input_cost_per_token") is None  # litellm guesses by model size
        ):
            assert price is None  # rules we do not follow: unknown, never wrong
            continue
        for prompt, completion, read, write in [(1000, 200, 0, 0), (300_000, 90, 1000, 500)]:
            usage = Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                prompt_tokens_details={"cached_tokens": read} if read else None,
                cache_creation_input_tokens=write or None,
                cache_read_input_tokens=read or None,
            )
            expected = litellm.completion_cost(
                completion_response=ModelResponse(model=name, usage=usage),
                model=f"{provider}/{name}",
                custom_llm_provider=provider,
            )
            assert price is not None, key
            assert price.cost(prompt, completion, read, write) == pytest.approx(expected), key
            checked += 1
    assert checked > 500


def test_an_unknown_model_costs_none() -> None:
    assert model_price("openai", "no-such-model") is None
    assert model_price("hosted_vllm", "gpt-4o-mini") is None  # another provider's entry


# --- the native path does not load litellm ----------------------------------------------


def test_a_simulated_run_never_imports_litellm() -> None:
    code = (
        "import asyncio, sys\n"
        "from async_batch_llm import LiteLLMStrategy, LLMWorkItem, ParallelBatchProcessor\n"
        "from async_batch_llm import ProcessorConfig\n"
        "async def main():\n"
        "    s = LiteLLMStrategy('simulated/fast')\n"
        "    async with ParallelBatchProcessor(config=ProcessorConfig(max_workers=4)) as p:\n"
        "        for n in range(20):\n"
        "            await p.add_work(LLMWorkItem(f'i{n}', s, f'[[sim:503 x1]] hello {n}'))\n"
        "        r = await p.process_all()\n"
        "    assert r.succeeded == 20, r\n"
        "    print(s.transport, r.results[0].output)\n"
        "asyncio.run(main())\n"
        "print('litellm' in sys.modules, 'openai' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env()
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0].startswith("native sim reply to")
    assert lines[1] == "False False"


async def test_one_session_is_kept_alive_across_calls() -> None:
    async with ProviderSimulator("fast") as sim:
        strategy = LiteLLMStrategy("openai/sim", api_base=sim.base_url, api_key="k")
        for n in range(5):
            await strategy.execute(f"call {n}", 1, 5)
        native: Any = strategy._native
        session = native._client._session
        await strategy.execute("again", 1, 5)
        assert native._client._session is session and not session.closed
        await strategy.cleanup()
        assert session.closed


# --- the answer size cap ----------------------------------------------------------------


KIB, MIB = 1024, 1024 * 1024


def capped(base: str, cap: int | None = 64 * KIB) -> LiteLLMStrategy:
    return LiteLLMStrategy(
        "openai/gpt-4o-mini", api_base=base, api_key=SECRET, max_response_bytes=cap
    )


@pytest.mark.parametrize("mode", ["", "CHUNKED", "GZIP"])
async def test_an_answer_over_the_cap_fails_its_item_and_one_under_it_passes(mode: str) -> None:
    """With Content-Length, without (chunked) and compressed (its Content-Length is not the
    size of what it unpacks to); the same session serves the next call."""
    async with big_answer_server() as base:
        strategy = capped(base)
        with pytest.raises(ResponseTooLargeError) as caught:
            await strategy.execute(f"SIZE={3 * MIB} {mode}", 1, 30)
        text, usage, _ = await strategy.execute(f"SIZE={32 * KIB} {mode}", 1, 30)
        await strategy.cleanup()
    assert text == "y" * 32 * KIB and usage["output_tokens"] == 7
    info = LiteLLMErrorClassifier().classify(caught.value)
    assert (info.error_category, info.is_retryable) == ("response_too_large", False)
    message = str(caught.value)
    assert "64.0 KiB cap" in message and "max_response_bytes=65536" in message
    assert "max_response_mb" in message  # how to raise it
    assert "billed for this call are unknown" in message
    if mode == "":
        assert "is 3.0 MiB (its Content-Length)" in message  # refused before reading
    else:
        assert "is more than 64.0 KiB (reading stopped at" in message
    assert SECRET not in message
    assert failed_attempt_usage(caught.value) is None  # nothing known to bill


async def test_a_chunked_answer_is_not_read_past_the_cap() -> None:
    """32 MiB streamed without Content-Length under a 64 KiB cap: memory stays bounded."""
    async with big_answer_server() as base:
        strategy = capped(base)
        await strategy.execute("SIZE=10", 1, 30)  # session and connection exist before measuring
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLargeError):
                await strategy.execute(f"SIZE={32 * MIB} CHUNKED", 1, 30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await strategy.cleanup()
    assert peak < 4 * MIB


async def test_no_cap_reads_any_answer_and_the_default_is_8_mib() -> None:
    async with big_answer_server() as base:
        strategy = capped(base, cap=None)
        text, _, _ = await strategy.execute(f"SIZE={3 * MIB} CHUNKED", 1, 30)
        await strategy.cleanup()
    assert len(text) == 3 * MIB
    assert DEFAULT_MAX_RESPONSE_BYTES == 8 * MIB
    assert LiteLLMStrategy("openai/gpt-4o-mini").max_response_bytes == 8 * MIB


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8MB"])
def test_a_cap_that_is_not_a_positive_int_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_response_bytes"):
        LiteLLMStrategy("openai/gpt-4o-mini", max_response_bytes=bad)
