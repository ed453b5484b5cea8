"""The provider simulator's batch endpoints: OpenAI Files + Batches, Anthropic Message Batches.

OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}`` and
``/content``, ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``,
``GET /v1/batches`` (newest first, ``limit``/``after``). Anthropic: ``POST
/v1/messages/batches``, ``GET /v1/messages/batches/{id}``, ``GET .../results`` (JSONL),
``POST .../cancel``, ``GET /v1/messages/batches`` (``limit``/``after_id``/``before_id``).

Each request of a batch is answered as the online endpoint would answer it (the same
``[[sim:...]]`` directives, counted per prompt together with online calls, so
``[[sim:503 x1]]`` fails inside the batch and succeeds when rescued online), without latency
or rate limits. Processing follows :class:`BatchSimSettings`: a batch's requests complete
evenly over ``processing_seconds`` of its ``clock`` (0: all at the first look); a batch still
running ``window_seconds`` after creation expires (what was done is kept, the rest is
``expired``); a cancelled batch ends at the next look with the rest ``cancelled``.
``create_delay`` holds the answer to a batch creation after the batch exists (tests kill a
client in that window). :attr:`BatchService.ledger` has one :class:`BatchLedgerEntry` per
request submitted in a batch; online calls stay in the simulator's own ledger.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import anthropic_api
from .protocol import ChatCall, InvalidRequest, parse_call

if TYPE_CHECKING:
    from .server import ProviderSimulator

__all__ = ["BatchLedgerEntry", "BatchService", "BatchSimSettings"]

CHAT_ENDPOINT = "/v1/chat/completions"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_OPENAI_ENDED = frozenset({"completed", "expired", "cancelled", "failed"})


@dataclass(slots=True)
class BatchSimSettings:
    """How simulated batches progress (see the module); mutable between requests."""

    processing_seconds: float = 0.0
    window_seconds: float = 24 * 3600.0
    create_delay: float = 0.0
    clock: Callable[[], float] = time.time


@dataclass(frozen=True, slots=True)
class BatchLedgerEntry:
    """One request submitted inside a batch."""

    batch_id: str
    protocol: str
    custom_id: str
    model: str
    last_user_message: str
    prompt_hash: str
    time: float


@dataclass(slots=True)
class _Request:
    custom_id: str
    call: ChatCall | None
    invalid: str | None = None


@dataclass(slots=True, eq=False)
class _Batch:
    id: str
    protocol: str
    created_at: float
    expires_at: float
    requests: list[_Request]
    metadata: dict[str, Any] = field(default_factory=dict)
    input_file_id: str | None = None
    completion_window: str = "24h"
    results: list[tuple[_Request, str, int, Any]] = field(default_factory=list)
    """``(request, kind, status, body)`` in completion order; kind: ok, errored, expired,
    cancelled."""
    status: str = "in_progress"
    cancel_at: float | None = None
    ended_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def count(self, *kinds: str) -> int:
        return sum(1 for result in self.results if result[1] in kinds)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str, anthropic: bool) -> web.Response:
    if anthropic:
        body = anthropic_api.error_body(status, message)
    else:
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    return web.Response(status=status, body=body, content_type="application/json")


class BatchService:
    """State and handlers of the batch endpoints of one :class:`ProviderSimulator`."""

    def __init__(self, simulator: ProviderSimulator, settings: BatchSimSettings | None) -> None:
        self.simulator = simulator
        self.settings = settings or BatchSimSettings()
        self.ledger: list[BatchLedgerEntry] = []
        self.batches: dict[str, _Batch] = {}
        self.files: dict[str, tuple[str, str, bytes]] = {}
        """``file_id -> (purpose, filename, content)``."""
        self._ids = itertools.count(1)

    # ledger helpers

    def batch_ids(self, protocol: str | None = None) -> list[str]:
        """Ids of every batch created, in creation order."""
        return [b.id for b in self.batches.values() if protocol in (None, b.protocol)]

    def submissions(self) -> dict[str, int]:
        """How many times each prompt (last user message) was submitted in a batch."""
        counts: dict[str, int] = {}
        for entry in list(self.ledger):
            counts[entry.last_user_message] = counts.get(entry.last_user_message, 0) + 1
        return counts

    def advance_all(self) -> None:
        """Bring every batch up to the clock now (tests call it after moving the clock)."""
        for batch in list(self.batches.values()):
            self._advance(batch)

    # routes

    def mount(self, app: web.Application) -> None:
        """Add the batch routes to the simulator's application."""
        add = app.router
        add.add_post("/v1/files", self._upload)
        add.add_get("/v1/files/{id}", self._file)
        add.add_get("/v1/files/{id}/content", self._file_content)
        add.add_post("/v1/batches", self._openai_create)
        add.add_get("/v1/batches", self._openai_list)
        add.add_get("/v1/batches/{id}", self._openai_get)
        add.add_post("/v1/batches/{id}/cancel", self._openai_cancel)
        add.add_post("/v1/messages/batches", self._anthropic_create)
        add.add_get("/v1/messages/batches", self._anthropic_list)
        add.add_get("/v1/messages/batches/{id}", self._anthropic_get)
        add.add_get("/v1/messages/batches/{id}/results", self._anthropic_results)
        add.add_post("/v1/messages/batches/{id}/cancel", self._anthropic_cancel)

    # processing

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def _record(self, batch: _Batch) -> None:
        now = time.time()
        for request in batch.requests:
            call = request.call
            self.ledger.append(
                BatchLedgerEntry(
                    batch.id,
                    batch.protocol,
                    request.custom_id,
                    call.model if call else "",
                    call.last_user[:200] if call else "",
                    call.prompt_hash if call else "",
                    now,
                )
            )

    def _due(self, batch: _Batch, at: float) -> int:
        total = len(batch.requests)
        seconds = self.settings.processing_seconds
        if seconds <= 0:
            return total
        return min(total, math.floor(total * max(0.0, at - batch.created_at) / seconds))

    def _advance(self, batch: _Batch) -> None:
        """Process the requests due by now; end the batch when done, expired or cancelled."""
        if batch.ended_at is not None:
            return
        now = self.settings.clock()
        due = self._due(batch, min(now, batch.expires_at))
        anthropic = batch.protocol == "anthropic"
        for request in batch.requests[len(batch.results) : due]:
            batch.results.append(self._answer(request, anthropic))
        if batch.cancel_at is not None:
            self._end(batch, "cancelled", now)
        elif len(batch.results) == len(batch.requests):
            self._end(batch, "completed", now)
        elif now >= batch.expires_at:
            self._end(batch, "expired", now)

    def _answer(self, request: _Request, anthropic: bool) -> tuple[_Request, str, int, Any]:
        if request.call is None:
            message = request.invalid or "invalid request"
            body = (
                json.loads(anthropic_api.error_body(400, message))
                if anthropic
                else {"error": {"message": message, "type": "invalid_request_error"}}
            )
            return request, "errored", 400, body
        status, body = self.simulator.batch_answer(request.call, anthropic)
        return request, "ok" if status == 200 else "errored", status, body

    def _end(self, batch: _Batch, how: str, now: float) -> None:
        left = "cancelled" if how == "cancelled" else "expired"
        for request in batch.requests[len(batch.results) :]:
            batch.results.append((request, left, 0, None))
        batch.ended_at = now
        if batch.protocol == "anthropic":
            batch.status = "ended"
            return
        batch.status = how
        out = [self._openai_line(batch, r) for r in batch.results if r[1] == "ok"]
        err = [self._openai_line(batch, r) for r in batch.results if r[1] != "ok"]
        if out:
            batch.output_file_id = self._store_file("batch_output", f"{batch.id}_output.jsonl", out)
        if err:
            batch.error_file_id = self._store_file("batch_output", f"{batch.id}_error.jsonl", err)

    def _store_file(self, purpose: str, name: str, lines: list[str]) -> str:
        file_id = self._new_id("file-sim")
        self.files[file_id] = (purpose, name, "".join(line + "\n" for line in lines).encode())
        return file_id

    def _openai_line(self, batch: _Batch, result: tuple[_Request, str, int, Any]) -> str:
        request, kind, status, body = result
        line: dict[str, Any] = {"id": self._new_id("batch_req_sim"), "custom_id": request.custom_id}
        if kind in ("expired", "cancelled"):
            code = "batch_expired" if kind == "expired" else "batch_cancelled"
            message = f"This request could not be executed before the batch was {kind}."
            line.update(response=None, error={"code": code, "message": message})
        else:
            line["response"] = {"status_code": status, "request_id": line["id"], "body": body}
            line["error"] = None
        return json.dumps(line)

    # OpenAI files

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        purpose = form.get("purpose")
        upload = form.get("file")
        if purpose != "batch" or not isinstance(upload, web.FileField):
            return _error(400, "expected multipart fields purpose=batch and file", False)
        content = upload.file.read()
        file_id = self._new_id("file-sim")
        self.files[file_id] = ("batch", upload.filename, content)
        return web.json_response(self._file_object(file_id))

    def _file_object(self, file_id: str) -> dict[str, Any]:
        purpose, name, content = self.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
        }

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return _error(404, f"No such File object: {file_id}", False)
        return web.json_response(self._file_object(file_id))

    async def _file_content(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return _error(404, f"No such File object: {file_id}", False)
        return web.Response(body=self.files[file_id][2], content_type="application/octet-stream")

    # OpenAI batches

    def _openai_requests(self, content: bytes) -> tuple[list[_Request], list[dict[str, Any]]]:
        """The requests of an input file, and the validation errors that fail the batch."""
        requests: list[_Request] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        for number, raw in enumerate(content.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                custom = line["custom_id"]
                if line.get("method") != "POST" or line.get("url") != CHAT_ENDPOINT:
                    raise ValueError(f"method must be POST and url {CHAT_ENDPOINT}")
                if custom in seen:
                    raise ValueError(f"duplicate custom_id {custom!r}")
                seen.add(custom)
                call = parse_call(json.dumps(line["body"]).encode())
            except (ValueError, KeyError, TypeError, InvalidRequest) as exc:
                errors.append({"code": "invalid_request", "message": str(exc), "line": number})
                continue
            models.add(call.model)
            requests.append(_Request(str(custom), call))
        if len(models) > 1:
            message = f"a batch may use one model, this file uses {sorted(models)}"
            errors.append({"code": "mixed_models", "message": message, "line": None})
        if not requests and not errors:
            errors.append(
                {"code": "empty_file", "message": "the input file is empty", "line": None}
            )
        return requests, errors

    async def _openai_create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            file_id = body["input_file_id"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "expected a JSON body with input_file_id", False)
        if file_id not in self.files:
            return _error(404, f"No such File object: {file_id}", False)
        if body.get("endpoint") != CHAT_ENDPOINT or body.get("completion_window") != "24h":
            return _error(400, f"endpoint must be {CHAT_ENDPOINT}, completion_window 24h", False)
        requests, errors = self._openai_requests(self.files[file_id][2])
        now = self.settings.clock()
        batch = _Batch(
            self._new_id("batch_sim"),
            "openai",
            now,
            now + self.settings.window_seconds,
            requests,
            metadata=dict(body.get("metadata") or {}),
            input_file_id=file_id,
        )
        if errors:
            batch.status, batch.errors, batch.ended_at = "failed", errors, now
        self.batches[batch.id] = batch
        self._record(batch)
        if self.settings.create_delay > 0:
            await asyncio.sleep(self.settings.create_delay)
        return web.json_response(self._openai_object(batch))

    def _openai_object(self, batch: _Batch, *, advance: bool = True) -> dict[str, Any]:
        if advance:
            self._advance(batch)
        ok = batch.count("ok")
        ended = int(batch.ended_at) if batch.ended_at is not None else None
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": CHAT_ENDPOINT,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created_at),
            "in_progress_at": int(batch.created_at),
            "expires_at": int(batch.expires_at),
            "completed_at": ended if batch.status == "completed" else None,
            "cancelled_at": ended if batch.status == "cancelled" else None,
            "expired_at": ended if batch.status == "expired" else None,
            "request_counts": {
                "total": len(batch.requests),
                "completed": ok,
                "failed": len(batch.results) - ok,
            },
            "metadata": batch.metadata or None,
        }

    def _batch_of(self, request: web.Request, protocol: str) -> _Batch | None:
        batch = self.batches.get(request.match_info["id"])
        return batch if batch is not None and batch.protocol == protocol else None

    async def _openai_get(self, request: web.Request) -> web.Response:
        batch = self._batch_of(request, "openai")
        if batch is None:
            return _error(404, "No such batch", False)
        return web.json_response(self._openai_object(batch))

    async def _openai_cancel(self, request: web.Request) -> web.Response:
        batch = self._batch_of(request, "openai")
        if batch is None:
            return _error(404, "No such batch", False)
        self._advance(batch)
        if batch.status in _OPENAI_ENDED:
            return _error(400, f"Cannot cancel a batch with status {batch.status}", False)
        batch.cancel_at, batch.status = self.settings.clock(), "cancelling"
        return web.json_response(self._openai_object(batch, advance=False))

    def _page(self, protocol: str, request: web.Request, after_key: str) -> list[_Batch]:
        batches = [b for b in reversed(self.batches.values()) if b.protocol == protocol]
        after = request.query.get(after_key)
        if after:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        before = request.query.get("before_id")
        if before:
            ids = [b.id for b in batches]
            batches = batches[: ids.index(before)] if before in ids else []
        return batches

    async def _openai_list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        batches = self._page("openai", request, "after")
        page = [self._openai_object(b) for b in batches[:limit]]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(batches) > limit,
            }
        )

    # Anthropic message batches

    async def _anthropic_create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            entries = body["requests"]
            if not isinstance(entries, list) or not entries:
                raise ValueError("requests must be a non-empty list")
            requests = [self._anthropic_request(entry) for entry in entries]
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f"invalid batch: {exc}", True)
        ids = [r.custom_id for r in requests]
        if len(set(ids)) != len(ids):
            return _error(400, "custom_id must be unique within a batch", True)
        now = self.settings.clock()
        batch = _Batch(
            self._new_id("msgbatch_sim"),
            "anthropic",
            now,
            now + self.settings.window_seconds,
            requests,
        )
        self.batches[batch.id] = batch
        self._record(batch)
        if self.settings.create_delay > 0:
            await asyncio.sleep(self.settings.create_delay)
        return web.json_response(self._anthropic_object(batch))

    @staticmethod
    def _anthropic_request(entry: Any) -> _Request:
        custom = entry["custom_id"]
        if not isinstance(custom, str) or not _CUSTOM_ID.match(custom):
            raise ValueError(f"custom_id must match {_CUSTOM_ID.pattern}, got {custom!r}")
        try:
            call = anthropic_api.parse_messages_call(json.dumps(entry["params"]).encode())
        except InvalidRequest as exc:
            return _Request(custom, None, str(exc))
        return _Request(custom, call)

    def _anthropic_object(self, batch: _Batch, *, advance: bool = True) -> dict[str, Any]:
        if advance:
            self._advance(batch)
        ended = batch.ended_at is not None
        root = self.simulator.base_url.removesuffix("/v1")
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status if ended or batch.cancel_at is None else "canceling",
            "request_counts": {
                "processing": len(batch.requests) - len(batch.results),
                "succeeded": batch.count("ok"),
                "errored": batch.count("errored"),
                "canceled": batch.count("cancelled"),
                "expired": batch.count("expired"),
            },
            "ended_at": _iso(batch.ended_at),
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.expires_at),
            "archived_at": None,
            "cancel_initiated_at": _iso(batch.cancel_at),
            "results_url": f"{root}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    async def _anthropic_get(self, request: web.Request) -> web.Response:
        batch = self._batch_of(request, "anthropic")
        if batch is None:
            return _error(404, "No such message batch", True)
        return web.json_response(self._anthropic_object(batch))

    async def _anthropic_cancel(self, request: web.Request) -> web.Response:
        batch = self._batch_of(request, "anthropic")
        if batch is None:
            return _error(404, "No such message batch", True)
        self._advance(batch)
        if batch.ended_at is None:
            batch.cancel_at = self.settings.clock()
        return web.json_response(self._anthropic_object(batch, advance=False))

    async def _anthropic_results(self, request: web.Request) -> web.Response:
        batch = self._batch_of(request, "anthropic")
        if batch is None:
            return _error(404, "No such message batch", True)
        self._advance(batch)
        if batch.ended_at is None:
            return _error(400, "results are available once processing has ended", True)
        lines = [json.dumps(self._anthropic_line(r)) + "\n" for r in batch.results]
        return web.Response(body="".join(lines).encode(), content_type="application/x-jsonl")

    @staticmethod
    def _anthropic_line(result: tuple[_Request, str, int, Any]) -> dict[str, Any]:
        request, kind, _status, body = result
        if kind == "ok":
            outcome: dict[str, Any] = {"type": "succeeded", "message": body}
        elif kind == "errored":
            outcome = {"type": "errored", "error": body}
        else:
            outcome = {"type": "canceled" if kind == "cancelled" else "expired"}
        return {"custom_id": request.custom_id, "result": outcome}

    async def _anthropic_list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        batches = self._page("anthropic", request, "after_id")
        page = [self._anthropic_object(b) for b in batches[:limit]]
        return web.json_response(
            {
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(batches) > limit,
            }
        )
