"""A loopback OpenAI-compatible provider with seeded latency, rate limits, faults and caching.

It serves ``POST /v1/chat/completions``, ``POST /v1/messages`` (Anthropic Messages, the
same behaviour in Anthropic's shapes: ``cache_read_input_tokens`` and
``cache_creation_input_tokens``, ``anthropic-ratelimit-*`` headers), ``GET /v1/models`` and
both providers' batch APIs (:mod:`.batches`: OpenAI Files + Batches, Anthropic Message
Batches, with their own ledger), so the engine (and litellm) can be exercised over real HTTP
without a real provider.
Behaviour comes from a :class:`SimulatorProfile` (random faults drawn from a seeded RNG)
and, for deterministic tests, from directives written into the last user message.

Directive grammar (anywhere in the last user message, several allowed)::

    [[sim:KIND(:OPTION=VALUE)*( xN)?]]
    [[sim:reply=TEXT]]

KIND is one of:

- ``NNN`` any HTTP status 400-599 with an OpenAI-style JSON error body, e.g. ``429``
  (``rate_limit_error``, with ``Retry-After``), ``503``, ``500``, ``400``, ``401``, ``404``;
- ``quota``: 429 with code ``insufficient_quota`` and no Retry-After (not transient);
- ``context_window``: 400 with code ``context_length_exceeded``;
- ``malformed``: 200 whose body is not JSON;
- ``no_choices``, ``empty_choices``, ``null_content``: 200 with JSON but no reply (no
  ``choices``/``content``, an empty list, or ``content: null``);
- ``reset``: the connection is closed without any response;
- ``slow`` or ``slow=SECONDS``: a normal answer after SECONDS (profile ``slow_seconds``);
- ``ok``: a normal answer (a placeholder to order the others, e.g. ``[[sim:ok x1]]``).

OPTION is ``retry_after=SECONDS`` (sets ``Retry-After``/``retry-after-ms`` on the error) or
``form=seconds|date|ms|reset`` (writes that wait only as ``Retry-After`` seconds, as an HTTP
date, as ``retry-after-ms``, or as ``x-ratelimit-reset-requests`` such as ``1m20s``).
``xN`` limits a directive to N requests carrying this exact prompt (same messages, counted
per prompt hash): directives are consumed in order, so ``[[sim:429 x2]][[sim:503 x1]]``
gives 429, 429, 503 and then normal answers. A directive without ``xN`` applies to every
remaining request. ``[[sim:reply=TEXT]]`` makes the reply exactly TEXT; TEXT runs to the
*last* ``]]`` of the message (so JSON with brackets works): write it last. An unknown
directive gets a 400 naming it, so a typo cannot pass silently.

With ``rpm_limit``/``tpm_limit`` set, every answer announces the budget left in rate-limit
headers (``x-ratelimit-limit|remaining|reset-requests|tokens`` on chat completions,
``anthropic-ratelimit-*`` on Messages); a request beyond it gets a 429 with Retry-After.
With ``echo_key`` a 401 echoes the caller's key in its message.

Decision order for a request: directive, profile ``context_window``, rpm/tpm limits (429
with the seconds until capacity frees), random faults, then a normal answer. Every answer
except 429s waits the drawn latency first. Every request leaves one :class:`LedgerEntry`.

Usage is a cheap deterministic estimate: ``prompt_tokens`` = 3 + per message (ceil(len/4) + 3),
``completion_tokens`` = ceil(len(reply)/4). With ``cache`` on, the longest prefix of the
concatenated messages already seen (whole blocks of ``cache_block_tokens``, at least
``cache_min_tokens``) is reported as ``usage.prompt_tokens_details.cached_tokens``.

Run standalone: ``python -m async_batch_llm.simulator --port 8765 --profile demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from . import anthropic_api
from .batches import BatchService, BatchSimSettings
from .limits import SlidingWindow, anthropic_headers, openai_headers
from .profiles import BUILTIN_PROFILES, SimulatorProfile, profile_from_name
from .protocol import (
    EMPTY_KINDS,
    ChatCall,
    InvalidRequest,
    completion_body,
    empty_completion_body,
    error_body,
    estimate_tokens,
    parse_call,
    reply_text,
    retry_headers,
    select_fault,
)

__all__ = ["LedgerEntry", "ProviderSimulator", "SimulatorProfile", "main", "profile_from_name"]

_CACHE_MAX_ENTRIES = 200_000
_SHUTDOWN_TIMEOUT = 0.5


# --- provider state -------------------------------------------------------------------------


class _PrefixCache:
    """Prompt prefixes seen before, in blocks, so repeated prefixes count as cached tokens."""

    def __init__(self, min_tokens: int, block_tokens: int) -> None:
        self._block = block_tokens * 4
        self._min = min_tokens * 4
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def cached_tokens(self, text: str) -> int:
        """Tokens of the longest block-aligned prefix seen before; remember this prompt's."""
        return self.lookup(text)[0]

    def lookup(self, text: str) -> tuple[int, int]:
        """``(read, written)``: tokens of the longest prefix seen before, and of the blocks
        this prompt adds to the cache (Anthropic's ``cache_creation_input_tokens``)."""
        running = hashlib.blake2b(digest_size=16)
        hit = stored = 0
        for end in range(self._block, len(text) + 1, self._block):
            running.update(text[end - self._block : end].encode())
            if end < self._min:
                continue
            key = running.copy().digest()
            if key in self._seen:
                hit = end
                self._seen.move_to_end(key)
            else:
                self._seen[key] = None
            stored = end
        while len(self._seen) > _CACHE_MAX_ENTRIES:
            self._seen.popitem(last=False)
        return hit // 4, max(0, stored - hit) // 4


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the provider did with one request (``status`` None: no HTTP answer was sent).

    ``outcome``: ``ok``; an HTTP status as text (``429``, ``503``, ``400``, ``401``...);
    ``quota``; ``context_window``; ``malformed``; ``reset``; ``slow`` (the client gave up
    before a slow answer); ``cancelled`` (the client left, or the server stopped, during
    the latency). ``cause``: why: ``directive``, ``random``, ``rpm``, ``tpm``,
    ``tpm_request_too_large``, ``context_window``, ``invalid_request``, ``invalid_directive``,
    ``slow`` (an ok delivered late), ``client_gone``, ``server_stopped``; empty for a plain ok.
    Token fields are zero except on ``ok``.
    """

    request_id: int
    time: float
    model: str
    prompt_hash: str
    last_user_message: str
    outcome: str
    status: int | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cause: str = ""
    cache_write_tokens: int = 0
    """Anthropic's ``cache_creation_input_tokens`` (always 0 on chat completions)."""

    def to_json(self) -> str:
        """One JSONL line (without the newline)."""
        return json.dumps({name: getattr(self, name) for name in self.__slots__})


@dataclass(slots=True)
class _Plan:
    """How one request will be answered."""

    outcome: str
    status: int | None
    cause: str
    delay: float = 0.0
    retry_after: float | None = None
    retry_form: str = "both"
    message: str = ""
    code: str | None = None
    err_type: str = ""


# --- the server -----------------------------------------------------------------------------


def _error_response(plan: _Plan, headers: dict[str, str], anthropic: bool = False) -> web.Response:
    """An OpenAI- (or Anthropic-) style JSON error, with Retry-After when the plan has a wait."""
    status = plan.status or 500
    if plan.retry_after is not None:
        headers.update(retry_headers(plan.retry_after, plan.retry_form, anthropic))
    if anthropic:
        message = plan.message
        if plan.outcome == "context_window":
            message = "prompt is too long: " + message
        body = anthropic_api.error_body(status, message)
    else:
        body = error_body(status, plan.message, plan.err_type, plan.code)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _caller_key(request: web.Request) -> str:
    """The key a request carries (``Authorization: Bearer`` or ``x-api-key``), '' if none."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key", "").strip()


def _pick_fault(draw: float, rates: dict[str, float]) -> str | None:
    """The rate whose slice of [0, 1) holds ``draw`` (slices laid end to end), else None."""
    edge = 0.0
    for name, rate in rates.items():
        edge += rate
        if draw < edge:
            return name
    return None


class ProviderSimulator:
    """An OpenAI-compatible chat server on loopback; ``async with`` it or run it in a thread.

    ``with ProviderSimulator(...) as sim:`` (no ``async``) serves from a daemon thread, for
    synchronous callers; the ledger may be read from any thread.
    """

    def __init__(
        self,
        profile: SimulatorProfile | str = "default",
        *,
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        ledger_path: str | Path | None = None,
        batch_settings: BatchSimSettings | None = None,
    ) -> None:
        self.profile = profile_from_name(profile) if isinstance(profile, str) else profile
        self.batches = BatchService(self, batch_settings)
        """The batch endpoints (OpenAI Files + Batches, Anthropic Message Batches) and
        their own ledger: see :mod:`.batches`."""
        self.host, self.port = host, port
        self.ledger: list[LedgerEntry] = []
        self.ledger_path = Path(ledger_path) if ledger_path is not None else None
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._attempts: dict[str, int] = {}
        p = self.profile
        self._window = SlidingWindow(p.rpm_limit, p.tpm_limit, p.rate_window)
        self._cache = _PrefixCache(p.cache_min_tokens, p.cache_block_tokens) if p.cache else None
        self._runner: web.AppRunner | None = None
        self._ledger_file: IO[str] | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the ``api_base`` to give an OpenAI client."""
        if self._runner is None:
            raise RuntimeError("the simulator is not running")
        return f"http://{self.host}:{self.port}/v1"

    # lifecycle

    async def start(self) -> str:
        """Bind and serve; return :attr:`base_url` (with the real port when ``port=0``)."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        self.batches.mount(app)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        if self.ledger_path is not None:
            self._ledger_file = self.ledger_path.open("a", encoding="utf-8")
        self._runner = runner
        return self.base_url

    async def stop(self) -> None:
        """Stop serving (in-flight answers get ``_SHUTDOWN_TIMEOUT`` s) and close the ledger."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._ledger_file is not None:
            self._ledger_file.close()
            self._ledger_file = None

    async def __aenter__(self) -> ProviderSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> ProviderSimulator:
        self.start_in_thread()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_thread()

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Serve from a daemon thread with its own event loop; return :attr:`base_url`."""
        if self._thread is not None:
            raise RuntimeError("the simulator thread is already running")
        loop = asyncio.new_event_loop()
        started = asyncio.run_coroutine_threadsafe(self.start(), loop)
        thread = threading.Thread(target=loop.run_forever, name="abl-simulator", daemon=True)
        thread.start()
        try:
            base_url = started.result(timeout)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()
            raise
        self._thread, self._thread_loop = thread, loop
        return base_url

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread` and join its thread."""
        thread, loop = self._thread, self._thread_loop
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            self._thread = self._thread_loop = None

    # ledger

    def ledger_ok(self) -> list[LedgerEntry]:
        """The entries of requests answered normally."""
        return [e for e in list(self.ledger) if e.outcome == "ok"]

    def count(self, outcome: str | None = None, prompt_contains: str | None = None) -> int:
        """Requests with this outcome whose (truncated) last user message contains the text."""
        return sum(
            1
            for e in list(self.ledger)
            if (outcome is None or e.outcome == outcome)
            and (prompt_contains is None or prompt_contains in e.last_user_message)
        )

    def totals(self) -> dict[str, int]:
        """Requests and tokens over the normal answers, to compare with the engine's totals."""
        ok = self.ledger_ok()
        prompt = sum(e.prompt_tokens for e in ok)
        completion = sum(e.completion_tokens for e in ok)
        return {
            "requests": len(ok),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cached_tokens": sum(e.cached_tokens for e in ok),
        }

    def requests_by_prompt(self, key: str = "last_user_message") -> dict[str, list[str]]:
        """Outcomes in arrival order, grouped by last user message (or ``"prompt_hash"``)."""
        grouped: dict[str, list[str]] = {}
        for entry in list(self.ledger):
            grouped.setdefault(getattr(entry, key), []).append(entry.outcome)
        return grouped

    def _record(
        self,
        rid: int,
        call: ChatCall | None,
        plan: _Plan,
        usage: tuple[int, int],
        cache_write: int = 0,
    ) -> None:
        """Append one ledger entry (and its JSONL line, flushed, when a ledger file is open)."""
        entry = LedgerEntry(
            request_id=rid,
            time=time.time(),
            model=call.model if call else "",
            prompt_hash=call.prompt_hash if call else "",
            last_user_message=call.last_user[:200] if call else "",
            outcome=plan.outcome,
            status=plan.status,
            prompt_tokens=call.prompt_tokens if call else 0,
            completion_tokens=usage[0],
            cached_tokens=usage[1],
            cause=plan.cause,
            cache_write_tokens=cache_write,
        )
        self.ledger.append(entry)
        if self._ledger_file is not None:
            self._ledger_file.write(entry.to_json() + "\n")
            self._ledger_file.flush()

    # decisions

    def _draw(self) -> tuple[float, float]:
        """One latency and one fault draw, always both, so a seed fixes the whole sequence."""
        p = self.profile
        latency = max(0.0, p.latency_mean + p.latency_jitter * (2 * self._rng.random() - 1))
        return latency, self._rng.random()

    def _directive_plan(self, call: ChatCall, latency: float) -> _Plan | None:
        """The plan a ``[[sim:...]]`` directive imposes on this attempt of the prompt, if any."""
        attempt = self._attempts.get(call.prompt_hash, 0)
        self._attempts[call.prompt_hash] = attempt + 1
        fault = select_fault(call.faults, attempt)
        if fault is None or fault.kind == "ok":
            return None
        kind, retry_after = fault.kind, fault.retry_after
        if kind == "slow":
            seconds = self.profile.slow_seconds if fault.seconds is None else fault.seconds
            return _Plan("slow", 200, "directive", delay=seconds)
        if kind in ("malformed", "reset") or kind in EMPTY_KINDS:
            return _Plan(kind, None if kind == "reset" else 200, "directive", delay=latency)
        if kind == "quota":
            message = "You exceeded your current quota, please check your plan and billing."
            return _Plan(
                "quota",
                429,
                "directive",
                message=message,
                code="insufficient_quota",
                err_type="insufficient_quota",
            )
        if kind == "context_window":
            return self._context_plan(call, "directive", latency)
        status = int(kind)
        if status == 429:
            retry_after = self.profile.retry_after if retry_after is None else retry_after
        delay = 0.0 if status == 429 else latency
        plan = _Plan(kind, status, "directive", delay=delay, retry_after=retry_after)
        plan.retry_form = fault.retry_form
        return plan

    def _context_plan(self, call: ChatCall, cause: str, latency: float) -> _Plan:
        """A 400 ``context_length_exceeded`` in OpenAI's wording (litellm matches on it)."""
        limit = self.profile.context_window or max(1, call.prompt_tokens - 1)
        message = (
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {call.prompt_tokens} tokens. Please reduce the length of the messages."
        )
        return _Plan(
            "context_window",
            400,
            cause,
            delay=latency,
            message=message,
            code="context_length_exceeded",
        )

    def _plan(self, call: ChatCall, completion_tokens: int) -> _Plan:
        """Decide the answer: directive, context window, limits, random fault, or ok."""
        latency, draw = self._draw()
        plan = self._directive_plan(call, latency) if call.faults else None
        if plan is not None:
            return plan
        p = self.profile
        if p.context_window is not None and call.prompt_tokens > p.context_window:
            return self._context_plan(call, "context_window", latency)
        now = time.monotonic()
        tokens = call.prompt_tokens + completion_tokens
        rejected = self._window.reject(now, tokens)
        if rejected is not None:
            limit, wait = rejected
            message = f"Rate limit reached ({limit}); retry in {wait:.3f}s (simulated)"
            return _Plan("429", 429, limit, retry_after=max(wait, 0.001), message=message)
        self._window.admit(now, tokens)
        return self._random_plan(draw, latency)

    def _limit_headers(self, anthropic: bool) -> dict[str, str]:
        """The rate-limit headers of an answer sent now, in the endpoint's style."""
        budget = self._window.budget(time.monotonic())
        if budget is None:
            return {}
        return anthropic_headers(budget, time.time()) if anthropic else openai_headers(budget)

    def _random_plan(self, draw: float, latency: float) -> _Plan:
        """Turn one uniform draw into the profile's random fault, or a normal answer."""
        p = self.profile
        fault = _pick_fault(draw, p.fault_rates())
        if fault is None:
            return _Plan("ok", 200, "", delay=latency)
        if fault == "rate_limit_rate":
            return _Plan("429", 429, "random", retry_after=p.retry_after)
        if fault == "slow_rate":
            return _Plan("slow", 200, "random", delay=p.slow_seconds + latency)
        outcome, status = {
            "server_error_rate": ("503", 503),
            "reset_rate": ("reset", None),
            "malformed_rate": ("malformed", 200),
        }[fault]
        return _Plan(outcome, status, "random", delay=latency)

    def batch_answer(self, call: ChatCall, anthropic: bool) -> tuple[int, Any]:
        """How one request inside a provider batch is answered: ``(status, body)``.

        The same decisions as online (directives, counted per prompt with the online calls,
        the profile's context window and random faults) without latency or rate limits; a
        dropped connection becomes a 500 and a malformed reply a body that is a string.
        """
        rid = next(self._ids)
        if call.directive_error is not None:
            plan = _Plan("400", 400, "invalid_directive", message=call.directive_error)
        else:
            latency, draw = self._draw()
            plan = (self._directive_plan(call, latency) if call.faults else None) or (
                self._context_plan(call, "context_window", latency)
                if self.profile.context_window is not None
                and call.prompt_tokens > self.profile.context_window
                else self._random_plan(draw, latency)
            )
        return self._batch_body(rid, call, plan, anthropic)

    def _usage(self, call: ChatCall, reply: str, anthropic: bool) -> tuple[int, int, int]:
        """``(completion, cache read, cache write)`` tokens of an answer (cache writes are
        reported on the Anthropic endpoint only, as Anthropic does)."""
        cached = written = 0
        if self._cache is not None:
            cached, written = self._cache.lookup(call.text)
        cached = min(cached, call.prompt_tokens)
        written = min(written, call.prompt_tokens - cached) if anthropic else 0
        return max(1, estimate_tokens(reply)), cached, written

    def _batch_body(
        self, rid: int, call: ChatCall, plan: _Plan, anthropic: bool
    ) -> tuple[int, Any]:
        if plan.outcome in ("ok", "slow"):
            reply = reply_text(call)
            completion, cached, written = self._usage(call, reply, anthropic)
            return 200, json.loads(
                _answer_body(rid, call, reply, (completion, cached, written), anthropic)
            )
        if plan.outcome == "malformed":
            return 200, "<html><body>upstream proxy error: not JSON</body></html>"
        if plan.outcome in EMPTY_KINDS:
            maker = anthropic_api.empty_body if anthropic else empty_completion_body
            return 200, json.loads(maker(rid, call, plan.outcome))
        status = 500 if plan.outcome == "reset" else plan.status or 500
        if anthropic:
            return status, json.loads(anthropic_api.error_body(status, plan.message))
        return status, json.loads(error_body(status, plan.message, plan.err_type, plan.code))

    # handlers

    async def _models(self, request: web.Request) -> web.Response:
        """``GET /v1/models``: a generic model id and one per built-in profile."""
        ids = ["sim-model", *(f"simulated/{name}" for name in BUILTIN_PROFILES)]
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "simulator"} for i in ids]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``: plan, wait, then answer (or drop) and record."""
        return await self._serve(request, anthropic=False)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages`` (Anthropic Messages): the same, in Anthropic's shapes."""
        return await self._serve(request, anthropic=True)

    async def _serve(self, request: web.Request, *, anthropic: bool) -> web.StreamResponse:
        raw = await request.read()
        rid = next(self._ids)
        try:
            call = anthropic_api.parse_messages_call(raw) if anthropic else parse_call(raw)
        except InvalidRequest as exc:
            plan = _Plan("400", 400, "invalid_request", message=str(exc))
            self._record(rid, None, plan, (0, 0))
            return _error_response(plan, {}, anthropic)
        if call.directive_error is not None:
            plan = _Plan("400", 400, "invalid_directive", message=call.directive_error)
            self._record(rid, call, plan, (0, 0))
            return _error_response(plan, {}, anthropic)
        reply = reply_text(call)
        plan = self._plan(call, max(1, estimate_tokens(reply)))
        headers = self._limit_headers(anthropic)
        headers["x-request-id"] = f"sim-{rid}"
        try:
            if plan.delay > 0:
                await asyncio.sleep(plan.delay)
        except asyncio.CancelledError:  # the client went away (or the server is stopping)
            cause = "server_stopped" if self._runner is None else "client_gone"
            gone = _Plan("slow" if plan.outcome == "slow" else "cancelled", None, cause)
            self._record(rid, call, gone, (0, 0))
            raise
        if plan.status == 401 and self.profile.echo_key:
            plan.message = f"Incorrect API key provided: {_caller_key(request)}"
        return self._answer(request, rid, call, plan, reply, headers, anthropic)

    def _answer(
        self,
        request: web.Request,
        rid: int,
        call: ChatCall,
        plan: _Plan,
        reply: str,
        headers: dict[str, str],
        anthropic: bool,
    ) -> web.Response:
        """Send the planned answer and record it; a delivered slow answer counts as ok."""
        if plan.outcome == "slow":
            plan = _Plan("ok", 200, "slow")
        if plan.outcome == "reset":
            self._record(rid, call, plan, (0, 0))
            if request.transport is not None:
                request.transport.close()  # aiohttp then fails to write and drops it quietly
            return web.Response(status=500)
        if plan.outcome == "malformed":
            self._record(rid, call, plan, (0, 0))
            body = b"<html><body>upstream proxy error: not JSON</body></html>"
            return web.Response(status=200, body=body, content_type="application/json")
        if plan.outcome in EMPTY_KINDS:
            self._record(rid, call, plan, (0, 0))
            maker = anthropic_api.empty_body if anthropic else empty_completion_body
            body = maker(rid, call, plan.outcome)
            return web.Response(body=body, content_type="application/json", headers=headers)
        if plan.outcome != "ok":
            self._record(rid, call, plan, (0, 0))
            return _error_response(plan, headers, anthropic)
        usage = self._usage(call, reply, anthropic)
        completion, cached, written = usage
        self._record(rid, call, plan, (completion, cached), written)
        body = _answer_body(rid, call, reply, usage, anthropic)
        return web.Response(body=body, content_type="application/json", headers=headers)


# --- command line ---------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m async_batch_llm.simulator",
        description="Serve a simulated OpenAI-compatible provider on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--profile", default="default", choices=sorted(BUILTIN_PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute limit")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute limit")
    parser.add_argument("--ledger", default=None, help="append one JSON line per request here")
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=0.0,
        help="a provider batch's requests complete evenly over this many seconds (0: at once)",
    )
    parser.add_argument(
        "--batch-window",
        type=float,
        default=24 * 3600.0,
        help="seconds after which an unfinished provider batch expires",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any profile field, e.g. --set server_error_rate=0.2 (repeatable)",
    )
    return parser.parse_args(argv)


def _profile_from_args(args: argparse.Namespace) -> SimulatorProfile:
    """The chosen profile with ``--rpm``/``--tpm``/``--set`` overrides applied."""
    overrides: dict[str, Any] = {}
    if args.rpm is not None:
        overrides["rpm_limit"] = args.rpm
    if args.tpm is not None:
        overrides["tpm_limit"] = args.tpm
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except ValueError:
            overrides[key.strip()] = value
    return profile_from_name(args.profile, **overrides)


async def _serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    sim = ProviderSimulator(
        _profile_from_args(args),
        seed=args.seed,
        host=args.host,
        port=args.port,
        ledger_path=args.ledger,
        batch_settings=BatchSimSettings(
            processing_seconds=args.batch_seconds, window_seconds=args.batch_window
        ),
    )
    async with sim:
        print(f"listening on {sim.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: run the simulator in the foreground."""
    asyncio.run(_serve(_parse_args(argv)))


def _answer_body(
    rid: int, call: ChatCall, reply: str, usage: tuple[int, int, int], anthropic: bool
) -> bytes:
    """A successful answer's JSON body on the endpoint asked (Messages or chat completions)."""
    completion, cached, written = usage
    if anthropic:
        return anthropic_api.message_body(rid, call, reply, completion, cached, written)
    return completion_body(rid, call, reply, completion, cached)


if __name__ == "__main__":
    main()
