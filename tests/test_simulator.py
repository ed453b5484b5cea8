"""Tests of the loopback provider simulator: protocol, faults, limits, ledger, and via litellm."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from async_batch_llm.simulator import ProviderSimulator
from async_batch_llm.simulator.profiles import SimulatorProfile, profile_from_name
from async_batch_llm.simulator.protocol import parse_directives, schema_example

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

LONG_PREFIX = "You are a careful assistant. Answer briefly and precisely. " * 8
"""About 120 estimated tokens: long enough for the prefix cache (32 tokens minimum)."""


async def post(
    sim: ProviderSimulator, text: str, *, timeout: float = 5.0, **extra: Any
) -> tuple[int, CIMultiDict[str], str]:
    """One chat request with a single user message: status, headers, body text."""
    payload = {"model": "sim-model", "messages": [{"role": "user", "content": text}], **extra}
    return await post_json(sim, payload, timeout=timeout)


async def post_json(
    sim: ProviderSimulator, payload: Any, *, timeout: float = 5.0
) -> tuple[int, CIMultiDict[str], str]:
    """POST any JSON body to the chat endpoint."""
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.post(f"{sim.base_url}/chat/completions", json=payload) as resp,
    ):
        return resp.status, resp.headers.copy(), await resp.text()


@pytest.fixture
async def sim() -> Any:
    async with ProviderSimulator("default") as running:
        yield running


@pytest.fixture
async def fast() -> Any:
    async with ProviderSimulator("fast") as running:
        yield running


# --- protocol ---------------------------------------------------------------------------------


async def test_ok_answer_has_the_openai_shape_and_is_in_the_ledger(sim: ProviderSimulator) -> None:
    status, headers, text = await post(sim, "hello there", model="my-model")
    body = json.loads(text)
    assert status == 200
    assert sim.base_url.startswith("http://127.0.0.1:") and sim.base_url.endswith("/v1")
    assert sim.port != 0
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "my-model"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "sim reply to hello there",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert headers["x-request-id"] == "sim-1"
    [entry] = sim.ledger
    assert (entry.outcome, entry.status, entry.model) == ("ok", 200, "my-model")
    assert entry.prompt_tokens == usage["prompt_tokens"]
    assert entry.completion_tokens == usage["completion_tokens"]
    assert entry.last_user_message == "hello there"


async def test_models_endpoint_lists_the_profiles(sim: ProviderSimulator) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{sim.base_url}/models") as resp:
        body = await resp.json()
    ids = {m["id"] for m in body["data"]}
    assert resp.status == 200 and body["object"] == "list"
    assert {"sim-model", "simulated/demo", "simulated/chaos"} <= ids


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"model": "m"}, "'messages' is required"),
        ({"model": "m", "messages": []}, "'messages' is required"),
        ({"messages": [{"role": "user", "content": "x"}]}, "'model' is required"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
        ([1, 2], "JSON object"),
    ],
)
async def test_invalid_requests_get_a_clear_400(
    fast: ProviderSimulator, payload: Any, fragment: str
) -> None:
    status, _, text = await post_json(fast, payload)
    error = json.loads(text)["error"]
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert [(e.outcome, e.cause) for e in fast.ledger] == [("400", "invalid_request")]


async def test_unknown_directive_is_a_400_naming_it(fast: ProviderSimulator) -> None:
    status, _, text = await post(fast, "hi [[sim:4299]]")
    assert status == 400
    assert "[[sim:4299]]" in json.loads(text)["error"]["message"]
    assert fast.ledger[0].cause == "invalid_directive"


# --- directives -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directive", "status", "err_type", "code"),
    [
        ("[[sim:503]]", 503, "server_error", "service_unavailable"),
        ("[[sim:400]]", 400, "invalid_request_error", None),
        ("[[sim:401]]", 401, "authentication_error", "invalid_api_key"),
        ("[[sim:500]]", 500, "server_error", None),
        ("[[sim:context_window]]", 400, "invalid_request_error", "context_length_exceeded"),
        ("[[sim:quota]]", 429, "insufficient_quota", "insufficient_quota"),
    ],
)
async def test_error_directives(
    fast: ProviderSimulator, directive: str, status: int, err_type: str, code: str | None
) -> None:
    got, headers, text = await post(fast, f"item 1 {directive}")
    error = json.loads(text)["error"]
    assert got == status
    assert (error["type"], error["code"]) == (err_type, code)
    assert "Retry-After" not in headers
    assert fast.ledger[0].status == status and fast.ledger[0].cause == "directive"


async def test_429_directive_carries_retry_after_headers(fast: ProviderSimulator) -> None:
    status, headers, text = await post(fast, "x [[sim:429:retry_after=0.2]]")
    assert status == 429
    assert json.loads(text)["error"]["code"] == "rate_limit_exceeded"
    assert (headers["Retry-After"], headers["retry-after-ms"]) == ("1", "200")
    status, headers, _ = await post(fast, "y [[sim:429]]")  # the profile's retry_after: 1 s
    assert (headers["Retry-After"], headers["retry-after-ms"]) == ("1", "1000")


async def test_malformed_directive_is_200_with_a_non_json_body(fast: ProviderSimulator) -> None:
    status, _, text = await post(fast, "x [[sim:malformed]]")
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(text)
    assert fast.count(outcome="malformed") == 1


async def test_reset_directive_drops_the_connection(fast: ProviderSimulator) -> None:
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(fast, "x [[sim:reset]]")
    assert [(e.outcome, e.status) for e in fast.ledger] == [("reset", None)]


async def test_counted_directives_are_consumed_in_order_per_prompt(fast: ProviderSimulator) -> None:
    prompt = "item-7 [[sim:429:retry_after=0 x2]][[sim:503 x1]]"
    statuses = [(await post(fast, prompt))[0] for _ in range(5)]
    other = (await post(fast, "item-8 [[sim:503 x1]]"))[0]
    assert statuses == [429, 429, 503, 200, 200]
    assert other == 503  # its own counter
    by_prompt = fast.requests_by_prompt()
    assert by_prompt[prompt] == ["429", "429", "503", "ok", "ok"]
    assert fast.count(outcome="ok", prompt_contains="item-7") == 2


async def test_ok_placeholder_orders_a_later_fault(fast: ProviderSimulator) -> None:
    statuses = [(await post(fast, "z [[sim:ok x1]][[sim:401]]"))[0] for _ in range(3)]
    assert statuses == [200, 401, 401]


async def test_reply_directive_sets_the_text_even_with_brackets(fast: ProviderSimulator) -> None:
    reply = '{"grid": [[1, 2], [3]], "ok": true}'
    _, _, text = await post(fast, f"[[sim:503 x1]] table please [[sim:reply={reply}]]")
    _, _, text = await post(fast, f"[[sim:503 x1]] table please [[sim:reply={reply}]]")
    assert json.loads(text)["choices"][0]["message"]["content"] == reply


def test_parse_directives_grammar() -> None:
    faults, reply = parse_directives("a [[sim:slow=2.5 x3]] b [[sim:429:retry_after=0.5]]")
    assert reply is None
    assert [(f.kind, f.count, f.seconds, f.retry_after) for f in faults] == [
        ("slow", 3, 2.5, None),
        ("429", None, None, 0.5),
    ]


async def test_json_schema_request_gets_a_fitting_object(fast: ProviderSimulator) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["a", "b"]},
            "inner": {"$ref": "#/$defs/Inner"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
            "optional": {"type": "string"},
        },
        "required": ["name", "score", "tags", "kind", "inner", "maybe"],
        "$defs": {"Inner": {"type": "object", "properties": {"flag": {"type": "boolean"}},
                            "required": ["flag"]}},
    }  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "Out", "schema": schema}}
    _, _, text = await post(fast, "extract", response_format=fmt)
    content = json.loads(json.loads(text)["choices"][0]["message"]["content"])
    assert content == {
        "name": "sim",
        "score": 0,
        "tags": [],
        "kind": "a",
        "inner": {"flag": False},
        "maybe": 0,
    }


async def test_json_object_request_gets_json(fast: ProviderSimulator) -> None:
    _, _, text = await post(fast, "hi", response_format={"type": "json_object"})
    content = json.loads(json.loads(text)["choices"][0]["message"]["content"])
    assert content == {"reply": "sim reply to hi"}


def test_schema_example_fills_min_items() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 2}
    assert schema_example(schema) == [0, 0]


# --- limits, latency, randomness --------------------------------------------------------------


async def test_rpm_limit_answers_429_until_the_window_frees() -> None:
    profile = SimulatorProfile(rpm_limit=3, rate_window=0.4)
    async with ProviderSimulator(profile) as sim:
        answers = [await post(sim, f"r{i}") for i in range(4)]
        remaining = [h.get("x-ratelimit-remaining-requests") for _, h, _ in answers[:3]]
        _, headers, text = answers[3]
        assert [a[0] for a in answers] == [200, 200, 200, 429]
        assert remaining == ["2", "1", "0"]
        assert json.loads(text)["error"]["type"] == "rate_limit_error"
        assert headers["Retry-After"] == "1"
        wait_ms = int(headers["retry-after-ms"])
        assert 0 < wait_ms <= 400
        assert sim.ledger[-1].cause == "rpm"
        await asyncio.sleep(wait_ms / 1000 + 0.02)
        assert (await post(sim, "after"))[0] == 200


async def test_rpm_limit_uses_a_sixty_second_window_by_default() -> None:
    async with ProviderSimulator(SimulatorProfile(rpm_limit=1)) as sim:
        await post(sim, "first")
        status, headers, _ = await post(sim, "second")
    assert status == 429
    assert headers["Retry-After"] == "60"
    assert 59_000 < int(headers["retry-after-ms"]) <= 60_000


async def test_tpm_limit_counts_tokens_and_rejects_oversized_requests() -> None:
    async with ProviderSimulator(SimulatorProfile(tpm_limit=100, rate_window=5)) as sim:
        first = await post(sim, "x" * 200)  # ~60 tokens
        second = await post(sim, "y" * 200)
        huge = await post(sim, "z" * 1000)  # more than the whole budget
    assert [first[0], second[0], huge[0]] == [200, 429, 429]
    assert [e.cause for e in sim.ledger] == ["", "tpm", "tpm_request_too_large"]
    assert int(second[1]["retry-after-ms"]) <= 5000


async def test_context_window_profile_rejects_long_prompts() -> None:
    async with ProviderSimulator(SimulatorProfile(context_window=50)) as sim:
        short = await post(sim, "short")
        long = await post(sim, "w" * 400)
    assert (short[0], long[0]) == (200, 400)
    assert json.loads(long[2])["error"]["code"] == "context_length_exceeded"


async def test_latency_delays_answers_but_not_429s() -> None:
    """An answer waits out the latency (a lower bound, whatever the machine's speed); a 429
    does not: with a latency of a minute, the 429 still comes back within the client's
    10 s deadline, where an answer cannot."""
    async with ProviderSimulator(SimulatorProfile(latency_mean=0.15)) as sim:
        started = time.monotonic()
        await post(sim, "wait")
        assert time.monotonic() - started >= 0.15
    async with ProviderSimulator(SimulatorProfile(latency_mean=60.0)) as sim:
        status, _, _ = await post(sim, "fail [[sim:429]]", timeout=10.0)
        assert status == 429
        with pytest.raises(asyncio.TimeoutError):
            await post(sim, "an answer waits out the latency", timeout=0.2)


async def test_slow_answer_trips_a_client_timeout_and_is_recorded(fast: ProviderSimulator) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await post(fast, "x [[sim:slow=5]]", timeout=0.2)
    await asyncio.sleep(0.05)  # the server notices the client left
    assert [(e.outcome, e.status, e.cause) for e in fast.ledger] == [("slow", None, "client_gone")]
    status, _, _ = await post(fast, "y [[sim:slow=0.05]]")
    assert status == 200
    assert (fast.ledger[-1].outcome, fast.ledger[-1].cause) == ("ok", "slow")


async def outcomes(profile: SimulatorProfile, seed: int, n: int = 40) -> list[str]:
    """The outcome sequence of ``n`` sequential requests with a given seed."""
    async with ProviderSimulator(profile, seed=seed) as sim:
        for i in range(n):
            with contextlib.suppress(aiohttp.ClientConnectionError):  # a reset
                await post(sim, f"req {i}")
        return [e.outcome for e in sim.ledger]


async def test_same_seed_gives_the_same_fault_sequence() -> None:
    chaos = profile_from_name("chaos", latency_mean=0.0, latency_jitter=0.0, slow_rate=0.0)
    first = await outcomes(chaos, seed=7)
    again = await outcomes(chaos, seed=7)
    other = await outcomes(chaos, seed=8)
    assert first == again
    assert first != other
    assert {"ok", "429", "503"} <= set(first)


async def test_certain_server_errors() -> None:
    async with ProviderSimulator(SimulatorProfile(server_error_rate=1.0)) as sim:
        statuses = [(await post(sim, f"p{i}"))[0] for i in range(5)]
    assert statuses == [503] * 5
    assert sim.count(outcome="503") == 5 and sim.totals()["requests"] == 0


def test_profiles_validate_and_override() -> None:
    demo = profile_from_name("simulated/demo", rpm_limit=60)
    assert demo.rpm_limit == 60 and demo.name == "demo"
    assert (
        demo.latency_mean - demo.latency_jitter >= 0.3
        and demo.latency_mean + demo.latency_jitter <= 0.8
    )
    assert profile_from_name("fast").latency_mean == 0.0
    with pytest.raises(ValueError, match="sum to"):
        SimulatorProfile(server_error_rate=0.6, reset_rate=0.6)
    with pytest.raises(ValueError, match="rpm_limit"):
        demo.replace(rpm_limit=0)
    with pytest.raises(ValueError, match="unknown simulator profile"):
        profile_from_name("nope")


# --- caching and the ledger -------------------------------------------------------------------


async def test_repeated_prefix_is_reported_as_cached(sim: ProviderSimulator) -> None:
    first = json.loads((await post(sim, LONG_PREFIX + "question one"))[2])["usage"]
    second = json.loads((await post(sim, LONG_PREFIX + "question two"))[2])["usage"]
    short = json.loads((await post(sim, "tiny"))[2])["usage"]
    short_again = json.loads((await post(sim, "tiny"))[2])["usage"]
    cached = second["prompt_tokens_details"]["cached_tokens"]
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    assert 100 <= cached <= second["prompt_tokens"] and cached % 16 == 0
    assert short_again["prompt_tokens_details"]["cached_tokens"] == 0  # below the minimum
    totals = sim.totals()
    assert totals["cached_tokens"] == cached
    assert totals["requests"] == 4
    assert totals["prompt_tokens"] == sum(
        u["prompt_tokens"] for u in (first, second, short, short_again)
    )


async def test_cache_off_in_fast_profile(fast: ProviderSimulator) -> None:
    await post(fast, LONG_PREFIX + "a")
    usage = json.loads((await post(fast, LONG_PREFIX + "a"))[2])["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0


async def test_ledger_file_gets_one_flushed_json_line_per_request(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    async with ProviderSimulator("fast", ledger_path=path) as sim:
        await post(sim, "one")
        await post(sim, "two [[sim:503]]")
        lines = path.read_text().splitlines()  # readable while the server still runs
    rows = [json.loads(line) for line in lines]
    assert [(r["request_id"], r["outcome"], r["status"]) for r in rows] == [
        (1, "ok", 200),
        (2, "503", 503),
    ]
    assert rows[0]["last_user_message"] == "one" and rows[0]["prompt_tokens"] > 0


# --- threads and the command line -------------------------------------------------------------


def _sync_post(base_url: str, text: str) -> dict[str, Any]:
    payload = {"model": "m", "messages": [{"role": "user", "content": text}]}
    req = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_runs_in_a_thread_for_synchronous_callers() -> None:
    sim = ProviderSimulator("fast")
    base_url = sim.start_in_thread()
    try:
        body = _sync_post(base_url, "from a thread")
    finally:
        sim.stop_thread()
    assert body["choices"][0]["message"]["content"] == "sim reply to from a thread"
    assert sim.count(outcome="ok") == 1
    with pytest.raises(OSError):
        _sync_post(base_url, "after stop")
    with ProviderSimulator("fast") as again:
        assert _sync_post(again.base_url, "ctx")["object"] == "chat.completion"


def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    ledger = tmp_path / "cli.jsonl"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "async_batch_llm.simulator", "--port", "0"]
    cmd += ["--profile", "fast", "--rpm", "5", "--ledger", str(ledger)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/v1")
        body = _sync_post(line.removeprefix("listening on "), "cli")
        assert body["usage"]["prompt_tokens"] > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads(ledger.read_text().splitlines()[0])["outcome"] == "ok"


# --- through litellm --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> Any:
    """litellm, imported once (it is slow) and quietened."""
    import litellm as module

    module.suppress_debug_info = True
    return module


async def acall(litellm: Any, sim: ProviderSimulator, text: str, **kwargs: Any) -> Any:
    """One litellm call against the simulator, with no hidden retries."""
    options: dict[str, Any] = {"timeout": 5, "max_retries": 0, **kwargs}
    return await litellm.acompletion(
        model="openai/sim-model",
        api_base=sim.base_url,
        api_key="sim",
        messages=[{"role": "user", "content": text}],
        **options,
    )


@pytest.mark.parametrize(
    ("directive", "error_name", "fragment"),
    [
        ("[[sim:503]]", "ServiceUnavailableError", "overloaded"),
        ("[[sim:400]]", "BadRequestError", "Bad request"),
        ("[[sim:401]]", "AuthenticationError", "API key"),
        ("[[sim:context_window]]", "ContextWindowExceededError", "maximum context length"),
        ("[[sim:malformed]]", "InternalServerError", "Expecting value"),
        ("[[sim:reset]]", "InternalServerError", "Connection error"),
    ],
)
async def test_litellm_maps_each_fault(
    litellm: Any, fast: ProviderSimulator, directive: str, error_name: str, fragment: str
) -> None:
    with pytest.raises(getattr(litellm, error_name)) as caught:
        await acall(litellm, fast, f"x {directive}")
    assert type(caught.value).__name__ == error_name
    assert fragment in str(caught.value)
    assert len(fast.ledger) == 1  # max_retries=0: no hidden retry reached the provider


async def test_litellm_rate_limit_exposes_retry_after(
    litellm: Any, fast: ProviderSimulator
) -> None:
    with pytest.raises(litellm.RateLimitError) as caught:
        await acall(litellm, fast, "x [[sim:429:retry_after=1.5]]")
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "1500")
    with pytest.raises(litellm.RateLimitError) as quota:
        await acall(litellm, fast, "y [[sim:quota]]")
    assert quota.value.body["code"] == "insufficient_quota"


async def test_litellm_times_out_on_a_slow_answer(litellm: Any, fast: ProviderSimulator) -> None:
    """A 5 s answer against a 0.3 s timeout: litellm gives up (it raises Timeout, not the
    answer), without retrying on its own (one request in the ledger)."""
    with pytest.raises(litellm.Timeout):
        await acall(litellm, fast, "x [[sim:slow=5]]", timeout=0.3)
    assert len(fast.ledger) <= 1


async def test_litellm_sees_usage_and_cached_tokens(litellm: Any, sim: ProviderSimulator) -> None:
    first = await acall(litellm, sim, LONG_PREFIX + "first question")
    second = await acall(litellm, sim, LONG_PREFIX + "second question")
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > 0 and cached == sim.ledger[-1].cached_tokens
    assert second.choices[0].message.content.startswith("sim reply to You are a careful")
    totals = sim.totals()
    assert totals["prompt_tokens"] == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert totals["completion_tokens"] == (
        first.usage.completion_tokens + second.usage.completion_tokens
    )


async def test_litellm_structured_output_gets_schema_json(
    litellm: Any, fast: ProviderSimulator
) -> None:
    from pydantic import BaseModel

    class Verdict(BaseModel):
        label: str
        confidence: float
        reasons: list[str]

    response = await acall(litellm, fast, "classify this", response_format=Verdict)
    verdict = Verdict.model_validate_json(response.choices[0].message.content)
    assert verdict == Verdict(label="sim", confidence=0, reasons=[])


# --- Anthropic Messages, rate-limit headers, key echo --------------------------------------------


async def post_messages(
    sim: ProviderSimulator, payload: Any, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], Any]:
    """POST a Messages request; status, headers and the JSON body."""
    host = sim.base_url.removesuffix("/v1")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{host}/v1/messages", json=payload, headers=headers or {}) as resp,
    ):
        return resp.status, resp.headers.copy(), await resp.json(content_type=None)


def messages_payload(text: str) -> dict[str, Any]:
    return {
        "model": "claude-sim",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
    }


async def test_messages_endpoint_answers_in_anthropics_shape() -> None:
    async with ProviderSimulator(profile_from_name("fast", cache=True)) as sim:
        payload = {**messages_payload("first"), "system": LONG_PREFIX}
        status, _, first = await post_messages(sim, payload)
        payload = {**messages_payload("second"), "system": LONG_PREFIX}
        _, _, second = await post_messages(sim, payload)
    assert status == 200
    assert first["type"] == "message" and first["content"][0]["type"] == "text"
    assert first["content"][0]["text"] == "sim reply to first"
    usage, again = first["usage"], second["usage"]
    assert usage["cache_read_input_tokens"] == 0 and usage["cache_creation_input_tokens"] > 0
    assert again["cache_read_input_tokens"] > 0
    # every prompt token is input, a cache read or a cache write, as on the ledger
    entry = sim.ledger[-1]
    assert (
        again["input_tokens"]
        + again["cache_read_input_tokens"]
        + again["cache_creation_input_tokens"]
        == entry.prompt_tokens
    )
    assert entry.cached_tokens == again["cache_read_input_tokens"]


async def test_messages_endpoint_forced_tool_gets_schema_input(fast: ProviderSimulator) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    payload = {
        **messages_payload("structured"),
        "tools": [{"name": "json_tool_call", "input_schema": schema}],
        "tool_choice": {"type": "tool", "name": "json_tool_call"},
    }
    status, _, body = await post_messages(fast, payload)
    assert status == 200
    assert body["content"] == [
        {
            "type": "tool_use",
            "id": body["content"][0]["id"],
            "name": "json_tool_call",
            "input": {"n": 0},
        }
    ]


async def test_messages_endpoint_errors_and_required_fields(fast: ProviderSimulator) -> None:
    status, _, body = await post_messages(fast, messages_payload("x [[sim:529]]"))
    assert (status, body["type"], body["error"]["type"]) == (529, "error", "overloaded_error")
    status, _, body = await post_messages(fast, {"model": "m", "messages": [{"role": "user"}]})
    assert status == 400 and "max_tokens" in body["error"]["message"]


async def test_limits_are_announced_in_each_endpoints_headers() -> None:
    async with ProviderSimulator(profile_from_name("fast", rpm_limit=5, tpm_limit=10_000)) as sim:
        _, chat, _ = await post(sim, "hello")
        _, messages, _ = await post_messages(sim, messages_payload("hello"))
    assert chat["x-ratelimit-limit-requests"] == "5"
    assert chat["x-ratelimit-remaining-requests"] == "4"
    assert chat["x-ratelimit-reset-requests"] == "1m0s"
    assert int(chat["x-ratelimit-remaining-tokens"]) < 10_000
    assert messages["anthropic-ratelimit-requests-limit"] == "5"
    assert messages["anthropic-ratelimit-requests-remaining"] == "3"
    assert messages["anthropic-ratelimit-tokens-reset"].endswith("Z")
    assert "x-ratelimit-limit-requests" not in messages


async def test_limited_profile_allows_its_rpm_then_429s_with_retry_after() -> None:
    profile = profile_from_name("limited", rpm_limit=3, latency_mean=0.0, latency_jitter=0.0)
    async with ProviderSimulator(profile) as sim:
        answers = [await post(sim, f"q{n}") for n in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    _, headers, _ = answers[-1]
    assert 58 <= int(headers["Retry-After"]) <= 60
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert profile_from_name("limited").rpm_limit == 300


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("seconds", {"retry-after": "5"}),
        ("ms", {"retry-after-ms": "5000"}),
        ("reset", {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "5s"}),
    ],
)
async def test_retry_forms(fast: ProviderSimulator, form: str, expected: dict[str, str]) -> None:
    status, headers, _ = await post(fast, f"w {form} [[sim:429:retry_after=5:form={form}]]")
    assert status == 429
    got = {
        k.lower(): v for k, v in headers.items() if "retry" in k.lower() or "ratelimit" in k.lower()
    }
    assert got == expected


async def test_empty_reply_directives(fast: ProviderSimulator) -> None:
    bodies = {}
    for kind in ("no_choices", "empty_choices", "null_content"):
        status, _, text = await post(fast, f"{kind} [[sim:{kind}]]")
        assert status == 200
        bodies[kind] = json.loads(text)
    assert "choices" not in bodies["no_choices"]
    assert bodies["empty_choices"]["choices"] == []
    assert bodies["null_content"]["choices"][0]["message"]["content"] is None


async def test_echo_key_puts_the_callers_key_in_a_401() -> None:
    async with ProviderSimulator(profile_from_name("fast", echo_key=True)) as sim:
        _, _, body = await post_messages(
            sim, messages_payload("[[sim:401]]"), headers={"x-api-key": "the-key-42"}
        )
    assert body["error"]["message"] == "Incorrect API key provided: the-key-42"
