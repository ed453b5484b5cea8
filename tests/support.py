"""Helpers shared by several test modules (imported as ``support``: tests/ is on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from async_batch_llm import LLMWorkItem, ParallelBatchProcessor


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of an ``abl-tui`` subprocess: no store, keys, proxies or forced colour;
    litellm stays offline."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"ABL_DB", "FORCE_COLOR", "CLICOLOR_FORCE", "COLUMNS", "LINES"}
        and not key.endswith("_API_KEY")
        and not key.lower().endswith("_proxy")
    }
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONIOENCODING="utf-8",
    )
    env.update(extra)
    return env


async def results_by_id(
    processor: ParallelBatchProcessor[Any, Any, Any], strategy: Any, prompts: list[str]
) -> dict[str, Any]:
    """Process one item per prompt (item id = prompt); every item must come back."""
    async with processor:
        for prompt in prompts:
            await processor.add_work(LLMWorkItem(prompt, strategy, prompt))
        batch = await asyncio.wait_for(processor.process_all(), 20)
    assert sorted(r.item_id for r in batch.results) == sorted(prompts)
    return {r.item_id: r for r in batch.results}


# ---------------------------------------------------------------------- abl-tui processes

ABL = [sys.executable, "-m", "abl_tui.cli"]  # the abl-tui command, as this Python runs it
PROCESS_TIMEOUT = 120.0  # seconds one abl-tui process of a test may take at most

_Output = int | IO[Any] | None


def run_abl(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``abl-tui *args`` run to its end in ``folder``: the tests' environment, no stdin,
    stdout and stderr captured as text."""
    return subprocess.run(
        [*ABL, *args],
        cwd=folder,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )


def start_abl(
    folder: Path,
    *args: str,
    stdout: _Output = subprocess.PIPE,
    stderr: _Output = subprocess.PIPE,
    **popen: Any,
) -> subprocess.Popen[str]:
    """``abl-tui *args`` started in ``folder``: the tests' environment, no stdin, stdout and
    stderr piped as text unless given."""
    return subprocess.Popen(
        [*ABL, *args],
        cwd=folder,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        text=True,
        **popen,
    )


def wait_until(proc: subprocess.Popen[Any], ready: Callable[[], bool], what: str) -> None:
    """Poll ``ready`` until it holds; fails if ``proc`` ends first or after PROCESS_TIMEOUT."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not ready():
        assert proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what}"
        time.sleep(0.005)


def count_rows(db: Path, table: str) -> int:
    """Rows in ``table`` of the store at ``db`` now, read without locking anyone out (0 while
    there is no file or no table yet)."""
    if not db.exists():
        return 0
    with contextlib.suppress(sqlite3.Error):
        uri = f"{db.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=0.05)) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    return 0


@contextlib.asynccontextmanager
async def big_answer_server() -> Any:
    """An OpenAI-compatible server on 127.0.0.1 whose answers are as large as the prompt asks
    (``SIZE=<bytes>`` of text), streamed in 64 KiB writes so the server never holds them:
    with ``Content-Length`` unless the prompt says ``CHUNKED``, gzip-compressed (and chunked)
    if it says ``GZIP``. Answers Anthropic's /v1/messages too. Yields the base URL (ending in
    /v1)."""
    import itertools
    import json
    import re
    import zlib

    from aiohttp import web

    piece = 1 << 16

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = str(body["messages"][-1]["content"])
        found = re.search(r"SIZE=(\d+)", prompt)
        size = int(found.group(1)) if found else 16
        reply: dict[str, Any] = {
            "id": "chatcmpl-big",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "@TEXT@"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }
        if request.path.endswith("/messages"):
            reply = {
                "id": "msg_big",
                "type": "message",
                "role": "assistant",
                "model": body.get("model"),
                "content": [{"type": "text", "text": "@TEXT@"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 5, "output_tokens": 7},
            }
        head, tail = (part.encode() for part in json.dumps(reply).split("@TEXT@"))
        gzip = "GZIP" in prompt
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if gzip:
            response.headers["Content-Encoding"] = "gzip"
        if gzip or "CHUNKED" in prompt:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(head) + size + len(tail)
        compressor = zlib.compressobj(wbits=31) if gzip else None
        await response.prepare(request)
        text = (b"y" * min(piece, size - at) for at in range(0, size, piece))  # lazily
        parts = itertools.chain((head,), text, (tail,))
        with contextlib.suppress(ConnectionError):  # the client stopped reading: fine
            for part in parts:
                await response.write(compressor.compress(part) if compressor else part)
            if compressor is not None:
                await response.write(compressor.flush())
            await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    app.router.add_post("/v1/messages", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def wait_for_thread(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition()`` while a runner works in its own thread, within PROCESS_TIMEOUT (a
    deadline that turns a hang into a failure saying what it waited for, not a speed bound)."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)
