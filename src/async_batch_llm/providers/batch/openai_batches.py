"""OpenAI's Batch API: a JSONL input file (Files API, ``purpose=batch``) and a batch on it.

Each line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``
(the body the online call sends). The batch carries our chunk id in its ``metadata``
(``abl_chunk_id``), so a submission cut short is found again by listing batches. Results are
two files: the output file (HTTP 200 lines) and the error file (other statuses, and the
requests left when the batch expired or was cancelled).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ..endpoints import Endpoint
from .http import BatchHttp
from .types import (
    OPENAI_LIMITS,
    BatchLimits,
    BatchState,
    OversizeLine,
    ProviderBatch,
    RequestResult,
)

__all__ = ["CHUNK_METADATA_KEY", "OpenAIBatchClient"]

CHUNK_METADATA_KEY = "abl_chunk_id"
CHAT_ENDPOINT = "/v1/chat/completions"
_ENDED = frozenset({"completed", "expired", "cancelled", "failed"})
_NOT_RUN_CODES = {"batch_expired": "expired", "batch_cancelled": "cancelled"}
_LIST_PAGE = 100


def _state(status: str) -> BatchState:
    if status in _ENDED:
        return "ended"
    return "cancelling" if status == "cancelling" else "in_progress"


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _time(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_batch(data: Any) -> ProviderBatch:
    """A ``batch`` object as a :class:`ProviderBatch`."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ValueError("the answer is not a batch object")
    status = str(data.get("status") or "")
    counts = data.get("request_counts") or {}
    metadata = data.get("metadata") or {}
    errors = (data.get("errors") or {}).get("data") or ()
    return ProviderBatch(
        provider="openai",
        batch_id=data["id"],
        state=_state(status),
        provider_status=status,
        total=_int(counts.get("total")),
        succeeded=_int(counts.get("completed")),
        failed=_int(counts.get("failed")),
        created_at=_time(data.get("created_at")),
        expires_at=_time(data.get("expires_at")),
        chunk_id=metadata.get(CHUNK_METADATA_KEY) if isinstance(metadata, dict) else None,
        input_file_id=data.get("input_file_id"),
        output_file_id=data.get("output_file_id"),
        error_file_id=data.get("error_file_id"),
        errors=tuple(str(e.get("message") or e) for e in errors if isinstance(e, dict)),
    )


def parse_result_line(line: bytes) -> RequestResult:
    """One line of an output or error file."""
    data = json.loads(line)
    custom_id = str(data.get("custom_id"))
    response = data.get("response")
    error = data.get("error")
    if isinstance(response, dict) and response.get("status_code") is not None:
        status = int(response["status_code"])
        body = response.get("body")
        if status == 200:
            return RequestResult(custom_id, "succeeded", body=body, status=200)
        inner = body.get("error") if isinstance(body, dict) else None
        inner = inner if isinstance(inner, dict) else {}
        return RequestResult(
            custom_id,
            "errored",
            status=status,
            error_type=inner.get("type"),
            code=str(inner["code"]) if inner.get("code") is not None else None,
            message=str(inner.get("message") or body or ""),
        )
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "")
    kind = _NOT_RUN_CODES.get(code)
    if kind == "expired":
        return RequestResult(custom_id, "expired", code=code, message=str(error.get("message")))
    if kind == "cancelled":
        return RequestResult(custom_id, "cancelled", code=code, message=str(error.get("message")))
    return RequestResult(
        custom_id, "errored", code=code or None, message=str(error.get("message") or "")
    )


class OpenAIBatchClient:
    """Submits, finds, polls, cancels and reads OpenAI batches on one endpoint."""

    provider = "openai"

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        limits: BatchLimits = OPENAI_LIMITS,
        completion_window: str = "24h",
        max_response_bytes: int | None = None,
    ) -> None:
        self.http = BatchHttp(endpoint, max_line_bytes=max_response_bytes)
        self.limits = limits
        self.completion_window = completion_window

    def __repr__(self) -> str:
        return f"OpenAIBatchClient({self.http.endpoint!r})"

    @staticmethod
    def request_line(custom_id: str, body: dict[str, Any]) -> bytes:
        """One input-file line (its newline included: its size counts toward the limit)."""
        line = {"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT, "body": body}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    async def upload(self, chunk_id: str, lines: Sequence[bytes]) -> str:
        """Upload the input file of a chunk; its file id."""
        data = await self.http.upload(
            "/files", {"purpose": "batch"}, f"{chunk_id}.jsonl", b"".join(lines)
        )
        file_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(file_id, str):
            raise ValueError("the file upload answer has no id")
        return file_id

    async def submit(
        self,
        chunk_id: str,
        lines: Sequence[bytes],
        *,
        file_id: str | None = None,
        on_file: Callable[[str], Awaitable[None]] | None = None,
    ) -> ProviderBatch:
        """Upload the lines (unless ``file_id`` is already uploaded), then create the batch.

        ``on_file`` is awaited with the new file id before the batch is created, so the caller
        can journal it (a resumed run then creates the batch from that file, not a new one).
        """
        if file_id is None:
            file_id = await self.upload(chunk_id, lines)
            if on_file is not None:
                await on_file(file_id)
        data = await self.http.post_json(
            "/batches",
            {
                "input_file_id": file_id,
                "endpoint": CHAT_ENDPOINT,
                "completion_window": self.completion_window,
                "metadata": {CHUNK_METADATA_KEY: chunk_id},
            },
        )
        return parse_batch(data)

    async def find(
        self, chunk_id: str, *, since: float, total: int, exclude: frozenset[str] = frozenset()
    ) -> ProviderBatch | None:
        """The batch whose metadata names ``chunk_id`` (created at ``since`` or later), if any."""
        async for batch in self._list(since):
            if batch.chunk_id == chunk_id and batch.batch_id not in exclude:
                return batch
        return None

    async def _list(self, since: float) -> AsyncIterator[ProviderBatch]:
        """Batches newest first, down to those created before ``since`` (minus a minute)."""
        async for item in self.http.listing("/batches", cursor="after", page_size=_LIST_PAGE):
            batch = parse_batch(item)
            if batch.created_at is not None and batch.created_at < since - 60:
                return
            yield batch

    async def get(self, batch_id: str) -> ProviderBatch:
        return parse_batch(await self.http.get_json(f"/batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> ProviderBatch:
        return parse_batch(await self.http.post_json(f"/batches/{batch_id}/cancel"))

    async def results(self, batch: ProviderBatch) -> AsyncIterator[RequestResult]:
        """Every result line of an ended batch: the output file, then the error file."""
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                async for line in self.http.lines(f"/files/{file_id}/content"):
                    if isinstance(line, OversizeLine):
                        yield line.result()
                    else:
                        yield parse_result_line(line)

    async def close(self) -> None:
        await self.http.close()
