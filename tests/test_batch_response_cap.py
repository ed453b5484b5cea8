"""The answer size cap on the batch API path: a results line over the strategy's
``max_response_bytes`` is not held whole, and its item fails as ``response_too_large`` (not
rescued online), as the online call would; the other lines are read as before.

Real HTTP to a loopback server that streams the results files (OpenAI's output file,
Anthropic's results) without ever holding the large line itself.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from async_batch_llm import LiteLLMStrategy
from async_batch_llm.batch_api.outcome import ItemWhere, outcome_of
from async_batch_llm.providers.batch import (
    OversizeLine,
    ProviderBatch,
    RequestResult,
    batch_client,
    batch_target,
)
from async_batch_llm.providers.batch.http import BatchHttp
from async_batch_llm.providers.endpoints import build_endpoint

KIB, MIB = 1024, 1024 * 1024
CAP = 64 * KIB


def openai_line(custom_id: str, size: int) -> Iterator[bytes]:
    """One output-file line answering ``size`` bytes of text, in pieces of 64 KiB at most."""
    body = {
        "id": "chatcmpl-b",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "@"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    response = {"status_code": 200, "body": body}
    line = {"id": "batch_req_1", "custom_id": custom_id, "response": response}
    head, tail = json.dumps(line).split('"@"')
    yield (head + '"').encode()
    for at in range(0, size, 64 * KIB):
        yield b"y" * min(64 * KIB, size - at)
    yield ('"' + tail + "\n").encode()


def anthropic_line(custom_id: str, size: int) -> Iterator[bytes]:
    message = {
        "id": "msg_b",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "@"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }
    line = {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
    head, tail = json.dumps(line).split('"@"')
    yield (head + '"').encode()
    for at in range(0, size, 64 * KIB):
        yield b"y" * min(64 * KIB, size - at)
    yield ('"' + tail + "\n").encode()


SIZES = {"c-0": 100, "c-1": 2 * MIB, "c-2": 32 * KIB}


async def stream(request: web.Request, pieces: Iterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/jsonl"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for piece in pieces:
        await response.write(piece)
    await response.write_eof()
    return response


async def openai_results(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("huge", SIZES["c-1"]))
    sizes = {**SIZES, "c-1": size}
    return await stream(request, (p for cid, n in sizes.items() for p in openai_line(cid, n)))


async def anthropic_results(request: web.Request) -> web.StreamResponse:
    pieces = (p for cid, n in SIZES.items() for p in anthropic_line(cid, n))
    return await stream(request, pieces)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """The host URL of a server with OpenAI's file content and Anthropic's results paths."""
    app = web.Application()
    app.router.add_get("/v1/files/{file_id}/content", openai_results)
    app.router.add_get("/v1/messages/batches/{batch_id}/results", anthropic_results)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def ended(provider: Any) -> ProviderBatch:
    return ProviderBatch(
        provider, "batch_1", "ended", "completed", 3, 3, 0, None, None, output_file_id="file_1"
    )


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_results_line_over_the_cap_fails_its_item_and_the_others_pass(
    server: str, provider: str
) -> None:
    model = "openai/gpt-4o-mini" if provider == "openai" else "anthropic/claude-haiku-4-5"
    base = server + "/v1" if provider == "openai" else server
    strategy = LiteLLMStrategy(model, api_base=base, api_key="k-123456", max_response_bytes=CAP)
    target = await batch_target(strategy)
    client = batch_client(target)
    try:
        lines: list[RequestResult] = [line async for line in client.results(ended(provider))]
    finally:
        await client.close()
    assert [line.custom_id for line in lines] == ["c-0", "c-1", "c-2"]
    assert isinstance(lines[1].body, OversizeLine)
    outcomes = [
        outcome_of(line, target, ItemWhere(f"item-{n}", "c", "batch_1", line.custom_id, 1.0))
        for n, line in enumerate(lines)
    ]
    assert [o.result.success for o in outcomes] == [True, False, True]
    assert outcomes[2].result.output == "y" * 32 * KIB
    failed = outcomes[1]
    assert failed.result.error_category == "response_too_large"
    assert not failed.rescue  # not sent again online: it would be as long there
    assert "64.0 KiB cap" in str(failed.result.error)
    assert "2.0 MiB (a line of the batch's results, not kept)" in str(failed.result.error)


async def test_a_results_line_over_the_cap_is_not_held(server: str) -> None:
    """A 32 MiB line under a 64 KiB cap: memory stays bounded while the file is read."""
    endpoint = build_endpoint("openai/gpt-4o-mini", server + "/v1", "k-123456")
    http = BatchHttp(endpoint, max_line_bytes=CAP)
    tracemalloc.start()
    try:
        lines = [line async for line in http.lines(f"/files/f/content?huge={32 * MIB}")]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await http.close()
    assert [type(line) for line in lines] == [bytes, OversizeLine, bytes]
    cut = lines[1]
    assert isinstance(cut, OversizeLine)
    assert cut.size > 32 * MIB and len(cut.head) == 4096 and cut.cap == CAP
    assert peak < 4 * MIB


async def test_without_a_cap_every_line_is_read_whole(server: str) -> None:
    endpoint = build_endpoint("openai/gpt-4o-mini", server + "/v1", "k-123456")
    http = BatchHttp(endpoint)
    try:
        lines = [line async for line in http.lines("/files/f/content")]
    finally:
        await http.close()
    assert [len(line) > 2 * MIB for line in lines if isinstance(line, bytes)] == [
        False,
        True,
        False,
    ]
