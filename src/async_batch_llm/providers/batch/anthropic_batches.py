"""Anthropic's Message Batches: one POST holding every request, results as JSONL when ended.

Each request is ``{"custom_id", "params"}`` with the body the online Messages call sends.
Anthropic keeps no metadata on a batch, so a submission cut short is found again by
listing batches created since the chunk was planned with exactly the chunk's request count
(and not already claimed by another chunk); see :meth:`AnthropicBatchClient.find`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from ..endpoints import Endpoint
from .http import BatchHttp
from .types import (
    ANTHROPIC_LIMITS,
    BatchLimits,
    BatchState,
    OversizeLine,
    ProviderBatch,
    RequestResult,
)

__all__ = ["AnthropicBatchClient"]

_STATUS_OF_ERROR = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_COUNT_NAMES = ("processing", "succeeded", "errored", "canceled", "expired")
_LIST_PAGE = 100
_CLOCK_SLACK = 120.0  # seconds of clock difference tolerated between us and the provider


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _state(status: str) -> BatchState:
    if status == "ended":
        return "ended"
    return "cancelling" if status == "canceling" else "in_progress"


def parse_batch(data: Any) -> ProviderBatch:
    """A ``message_batch`` object as a :class:`ProviderBatch`."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ValueError("the answer is not a message batch object")
    status = str(data.get("processing_status") or "")
    raw = data.get("request_counts") or {}
    counts = {name: _int(raw.get(name)) for name in _COUNT_NAMES}
    return ProviderBatch(
        provider="anthropic",
        batch_id=data["id"],
        state=_state(status),
        provider_status=status,
        total=sum(counts.values()),
        succeeded=counts["succeeded"],
        failed=counts["errored"] + counts["canceled"] + counts["expired"],
        created_at=_time(data.get("created_at")),
        expires_at=_time(data.get("expires_at")),
    )


def _error_fields(error: Any) -> tuple[str | None, str]:
    """``(type, message)`` of an errored result (nested ``{"type": "error", "error": {}}`` too)."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if not isinstance(error, dict):
        return None, ""
    kind = error.get("type")
    return (kind if isinstance(kind, str) else None), str(error.get("message") or "")


def parse_result_line(line: bytes) -> RequestResult:
    """One line of a batch's results."""
    data = json.loads(line)
    custom_id = str(data.get("custom_id"))
    result = data.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        return RequestResult(custom_id, "succeeded", body=result.get("message"), status=200)
    if kind in ("expired", "canceled"):
        return RequestResult(custom_id, "expired" if kind == "expired" else "cancelled")
    error_type, message = _error_fields(result.get("error"))
    status = _STATUS_OF_ERROR.get(error_type or "", 500)
    return RequestResult(
        custom_id, "errored", status=status, error_type=error_type, message=message
    )


class AnthropicBatchClient:
    """Submits, finds, polls, cancels and reads Anthropic Message Batches on one endpoint."""

    provider = "anthropic"

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        limits: BatchLimits = ANTHROPIC_LIMITS,
        max_response_bytes: int | None = None,
    ) -> None:
        self.http = BatchHttp(endpoint, max_line_bytes=max_response_bytes)
        self.limits = limits

    def __repr__(self) -> str:
        return f"AnthropicBatchClient({self.http.endpoint!r})"

    @staticmethod
    def request_line(custom_id: str, body: dict[str, Any]) -> bytes:
        """One request of the batch body (plus one byte for the comma that joins them)."""
        line = {"custom_id": custom_id, "params": body}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b","

    async def submit(
        self,
        chunk_id: str,
        lines: Sequence[bytes],
        *,
        file_id: str | None = None,
        on_file: Callable[[str], Awaitable[None]] | None = None,
    ) -> ProviderBatch:
        """Create the batch in one POST (there is no file step: ``file_id`` is ignored)."""
        body = b'{"requests":[' + b"".join(lines).rstrip(b",") + b"]}"
        raw = await self.http.request(
            "POST", "/messages/batches", data=body, content_type="application/json"
        )
        return parse_batch(json.loads(raw))

    async def find(
        self, chunk_id: str, *, since: float, total: int, exclude: frozenset[str] = frozenset()
    ) -> ProviderBatch | None:
        """A batch created since ``since`` with ``total`` requests that no other chunk holds.

        The best Anthropic allows (batches have no metadata): a batch of the same size created
        by someone else on the same key in the same minutes would be taken for ours.
        """
        listing = self.http.listing("/messages/batches", cursor="after_id", page_size=_LIST_PAGE)
        async for item in listing:
            batch = parse_batch(item)
            if batch.created_at is not None and batch.created_at < since - _CLOCK_SLACK:
                return None
            if batch.total == total and batch.batch_id not in exclude:
                return batch
        return None

    async def get(self, batch_id: str) -> ProviderBatch:
        return parse_batch(await self.http.get_json(f"/messages/batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> ProviderBatch:
        return parse_batch(await self.http.post_json(f"/messages/batches/{batch_id}/cancel"))

    async def results(self, batch: ProviderBatch) -> AsyncIterator[RequestResult]:
        """Every result line of an ended batch."""
        async for line in self.http.lines(f"/messages/batches/{batch.batch_id}/results"):
            yield line.result() if isinstance(line, OversizeLine) else parse_result_line(line)

    async def close(self) -> None:
        await self.http.close()
