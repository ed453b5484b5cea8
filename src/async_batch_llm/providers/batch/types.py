"""Provider-neutral shapes of the batch APIs: one batch's state, one request's result.

OpenAI's Batches and Anthropic's Message Batches name the same things differently; the
clients translate both into these, so the engine-level API (:mod:`async_batch_llm.batch_api`)
never looks at a provider's own field names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ANTHROPIC_LIMITS",
    "OPENAI_LIMITS",
    "BatchLimits",
    "BatchProvider",
    "BatchState",
    "OversizeLine",
    "ProviderBatch",
    "RequestResult",
]

BatchProvider = Literal["openai", "anthropic"]

BatchState = Literal["in_progress", "cancelling", "ended"]
"""``in_progress`` (validating and finalizing included), ``cancelling``, or ``ended``: the
provider will change nothing more and the results (if any) can be read."""


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How much one provider batch may hold: requests and bytes of JSONL."""

    max_requests: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError(f"batch limits must be >= 1, got {self}")


OPENAI_LIMITS = BatchLimits(50_000, 200 * 1024 * 1024)
"""OpenAI: 50,000 requests and a 200 MB input file per batch."""
ANTHROPIC_LIMITS = BatchLimits(100_000, 256 * 1024 * 1024)
"""Anthropic: 100,000 requests and 256 MB per Message Batch."""


@dataclass(frozen=True, slots=True)
class ProviderBatch:
    """One provider batch as last seen: ids, state, counts and times (Unix seconds)."""

    provider: BatchProvider
    batch_id: str
    state: BatchState
    provider_status: str
    """The provider's own word: ``in_progress``, ``completed``, ``expired``, ``ended``..."""
    total: int
    succeeded: int
    failed: int
    created_at: float | None
    expires_at: float | None
    chunk_id: str | None = None
    """Our chunk id, where the provider keeps metadata (OpenAI); None for Anthropic."""
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[str, ...] = ()
    """Why the provider refused the whole batch (OpenAI's validation ``errors``)."""

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    @property
    def refused(self) -> bool:
        """True for a batch the provider failed as a whole (OpenAI ``failed``)."""
        return self.provider_status == "failed"


@dataclass(frozen=True, slots=True)
class RequestResult:
    """One request's line of a batch's results, keyed by our ``custom_id``.

    ``kind``: ``succeeded`` (``body`` is the reply, as the online endpoint sends it, or an
    :class:`OversizeLine` the target refuses as the online transport refuses such answers),
    ``errored`` (``status``/``error_type``/``code``/``message`` say why), or ``expired`` /
    ``cancelled`` (never processed: the batch ran out of time or was cancelled).
    """

    custom_id: str
    kind: Literal["succeeded", "errored", "expired", "cancelled"]
    body: Any = None
    status: int | None = None
    error_type: str | None = None
    code: str | None = None
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"([A-Za-z0-9_.:-]*)"')


@dataclass(frozen=True, slots=True)
class OversizeLine:
    """A results line longer than the answer size cap, not read past it: its first bytes
    (where both providers put the ``custom_id``), the bytes seen, and the cap."""

    head: bytes
    size: int
    cap: int

    def result(self) -> RequestResult:
        """The line as a result for its ``custom_id`` ("" when the head does not name it)."""
        found = _CUSTOM_ID.search(self.head)
        custom_id = found.group(1).decode() if found else ""
        return RequestResult(custom_id, "succeeded", body=self, status=200)
