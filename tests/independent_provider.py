"""An independent OpenAI- and Anthropic-compatible provider for end-to-end checks.

Written from the providers' public API documents, not from abl's simulator, so the checks
that use it test our code against something we did not write. It runs in its own process
(``python tests/independent_provider.py --ledger FILE``), prints ``port N`` once it listens
on 127.0.0.1, and appends one JSON line per request it answered to the ledger:
``{"t", "path", "prompt", "status"}`` (the ledger is the truth about what was paid).

Markers in the last user message choose the answer:

- ``ECHO401``: 401 whose message repeats the Authorization / x-api-key header, as real
  providers do ("Incorrect API key provided: ...");
- ``ECHO500``: 500 whose plain-text body repeats it;
- ``STORM``: 429 without Retry-After or limit headers the first two times a prompt is seen;
- ``HUGE=<MiB>``: an answer of that many MiB of text;
- ``SLOWMS=<n>``: answer after n ms instead of ``--latency``.

Every other prompt is answered ``ANS:<md5(prompt)[:12]>`` with usage from :func:`usage_for`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

CREATION_TOKENS = 4  # Anthropic cache_creation_input_tokens on every answer


def usage_for(prompt: str) -> tuple[int, int, int]:
    """(prompt tokens in all, cached prompt tokens, completion tokens) for ``prompt``."""
    total = 20 + len(prompt) // 4
    return total, total // 2, 3


def answer_for(prompt: str) -> str:
    """The text answered for ``prompt``."""
    return "ANS:" + hashlib.md5(prompt.encode()).hexdigest()[:12]


class Provider:
    """The handlers and the ledger."""

    def __init__(self, ledger: TextIO, latency: float) -> None:
        self.ledger = ledger
        self.latency = latency
        self.seen: Counter[str] = Counter()

    def log(self, path: str, prompt: str, status: int) -> None:
        record = {"t": time.time(), "path": path, "prompt": prompt, "status": status}
        self.ledger.write(json.dumps(record) + "\n")

    async def openai(self, request: web.Request) -> web.Response:
        return await self.answer(request, "openai")

    async def anthropic(self, request: web.Request) -> web.Response:
        return await self.answer(request, "anthropic")

    async def answer(self, request: web.Request, kind: str) -> web.Response:
        body = await request.json()
        messages = body.get("messages") or [{"content": ""}]
        content = messages[-1].get("content", "")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        prompt = str(content)
        secret = request.headers.get("Authorization") or request.headers.get("x-api-key") or ""
        slow = re.search(r"SLOWMS=(\d+)", prompt)
        await asyncio.sleep(int(slow.group(1)) / 1000 if slow else self.latency)
        early = self.early_answer(request.path, prompt, secret, kind)
        if early is not None:
            return early
        self.log(request.path, prompt, 200)
        return web.json_response(reply(prompt, kind, body.get("model")))

    def early_answer(self, path: str, prompt: str, secret: str, kind: str) -> web.Response | None:
        """The error answers the markers ask for (None: answer normally)."""
        if "ECHO401" in prompt:
            self.log(path, prompt, 401)
            if kind == "openai":
                message = f"Incorrect API key provided: {secret}. You can find your API key at"
                error: dict[str, Any] = {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                }
            else:
                error = {
                    "type": "error",
                    "error": {
                        "type": "authentication_error",
                        "message": f"invalid x-api-key: {secret}",
                    },
                }
            return web.json_response(error, status=401)
        if "ECHO500" in prompt:
            self.log(path, prompt, 500)
            return web.Response(status=500, text=f"upstream crashed handling key {secret}")
        if "STORM" in prompt:
            self.seen[prompt] += 1
            if self.seen[prompt] <= 2:
                self.log(path, prompt, 429)
                error = {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                }
                return web.json_response(error, status=429)
        return None


def reply(prompt: str, kind: str, model: Any) -> dict[str, Any]:
    """A successful answer in the provider's own format."""
    total, cached, completion = usage_for(prompt)
    huge = re.search(r"HUGE=(\d+)", prompt)
    text = "y" * (int(huge.group(1)) * 1024 * 1024) if huge else answer_for(prompt)
    if kind == "openai":
        return {
            "id": "chatcmpl-independent",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": total,
                "completion_tokens": completion,
                "total_tokens": total + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }
    return {
        "id": "msg_independent",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": total - cached - CREATION_TOKENS,
            "output_tokens": completion,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": CREATION_TOKENS,
        },
    }


@dataclass
class RunningProvider:
    """A provider process of this module, seen from a test."""

    port: int
    ledger_path: Path

    @property
    def openai_base(self) -> str:
        """``--api-base`` for OpenAI-compatible calls (the URL ending in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base(self) -> str:
        """``--api-base`` for Anthropic calls (the host, as ANTHROPIC_BASE_URL)."""
        return f"http://127.0.0.1:{self.port}"

    def ledger(self) -> list[dict[str, Any]]:
        """Every request answered so far, in order."""
        if not self.ledger_path.exists():
            return []
        return [json.loads(line) for line in self.ledger_path.read_text().splitlines()]

    def paid(self) -> Counter[str]:
        """How many times each prompt was answered successfully (what a provider bills)."""
        return Counter(r["prompt"] for r in self.ledger() if r["status"] == 200)


@contextmanager
def running_provider(folder: Path, latency: float = 0.01) -> Iterator[RunningProvider]:
    """Start the provider in its own process for the ``with`` block; stop it after."""
    ledger = folder / "provider-ledger.jsonl"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--ledger", str(ledger), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("port "), f"the provider did not start: {line!r}"
        yield RunningProvider(int(line.split()[1]), ledger)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--latency", type=float, default=0.01)
    args = parser.parse_args()
    provider = Provider(open(args.ledger, "a", buffering=1), args.latency)  # noqa: SIM115
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", provider.openai)
    app.router.add_post("/v1/messages", provider.anthropic)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"port {sock.getsockname()[1]}", flush=True, file=sys.stdout)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
