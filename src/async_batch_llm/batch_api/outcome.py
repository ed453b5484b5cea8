"""One item's outcome in a provider batch: a final result, or an item to rescue online.

A result line becomes a :class:`~async_batch_llm.base.WorkItemResult` the way the online
call would make it (same output shaping, token counts and error categories, through the
strategy's classifier), with the cost at the batch price. ``rescue`` is True for what the
online engine may still get right: a retryable error (5xx, 429, a malformed or
non-validating reply), and requests the batch never ran (expired, cancelled, a batch the
provider refused as a whole). A non-retryable error (a 400, a 401...) is final.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import WorkItemResult
from ..llm_strategies import make_usage
from ..providers.batch.target import BatchTarget
from ..providers.batch.types import RequestResult
from ..providers.litellm_errors import LiteLLMErrorClassifier
from ..providers.provider_errors import ProviderError, ProviderStatusError
from ..strategies.errors import ErrorInfo, TokenTrackingError

__all__ = ["BatchItemOutcome", "ItemWhere", "not_run_outcome", "outcome_of"]

_CLASSIFIER = LiteLLMErrorClassifier()
_NOT_RUN_CATEGORY = {"expired": "batch_expired", "cancelled": "batch_cancelled"}


@dataclass(frozen=True, slots=True)
class BatchItemOutcome:
    """What became of one item in a batch; ``rescue``: send it online (see the module)."""

    result: WorkItemResult[Any, Any]
    rescue: bool
    chunk_id: str
    batch_id: str | None

    @property
    def item_id(self) -> str:
        return self.result.item_id


@dataclass(frozen=True, slots=True)
class ItemWhere:
    """Which item a result line is for, in which chunk and batch, after how long."""

    item_id: str
    chunk_id: str
    batch_id: str | None
    custom_id: str
    duration: float


def _metadata(where: ItemWhere, target: BatchTarget, extra: dict[str, Any]) -> dict[str, Any]:
    batch = {
        "provider": target.provider,
        "batch_id": where.batch_id,
        "chunk_id": where.chunk_id,
        "custom_id": where.custom_id,
    }
    return {"model": target.strategy.model, "batch": batch, **extra}


def _classify(target: BatchTarget, exc: Exception) -> ErrorInfo:
    classifier = getattr(target.strategy, "error_classifier", None) or _CLASSIFIER
    info: ErrorInfo = classifier.classify(exc)
    return info


def _failure(
    where: ItemWhere,
    target: BatchTarget,
    exc: Exception,
    usage: Any = None,
    cost: float | None = None,
) -> BatchItemOutcome:
    info = _classify(target, exc)
    result: WorkItemResult[Any, Any] = WorkItemResult(
        where.item_id,
        False,
        error=f"{type(exc).__name__}: {exc}",
        token_usage=usage or make_usage(),
        attempts=1,
        error_category=info.error_category,
        duration=where.duration,
        cost=cost,
        metadata=_metadata(where, target, {}),
    )
    return BatchItemOutcome(result, info.is_retryable, where.chunk_id, where.batch_id)


def _success(where: ItemWhere, target: BatchTarget, body: Any) -> BatchItemOutcome:
    try:
        reply = target.parse(body)
    except ProviderError as exc:
        return _failure(where, target, exc)
    usage = make_usage(reply.prompt_tokens, reply.completion_tokens, reply.cache_read_tokens)
    cost = None
    if target.price is not None:
        cost = target.price.cost(
            reply.prompt_tokens,
            reply.completion_tokens,
            reply.cache_read_tokens,
            reply.cache_write_tokens,
        )
    extra = {"cost": cost, "response_id": reply.response_id}
    metadata = _metadata(where, target, extra)
    try:
        output = target.output(reply.text, usage, metadata)
    except TokenTrackingError as exc:  # a structured reply that does not validate: billed
        return _failure(where, target, exc, usage, cost)
    result: WorkItemResult[Any, Any] = WorkItemResult(
        where.item_id,
        True,
        output=output,
        token_usage=usage,
        attempts=1,
        duration=where.duration,
        cost=cost,
        metadata=metadata,
    )
    return BatchItemOutcome(result, False, where.chunk_id, where.batch_id)


def outcome_of(line: RequestResult, target: BatchTarget, where: ItemWhere) -> BatchItemOutcome:
    """The outcome of one result line for the item ``where`` names."""
    if line.kind == "succeeded":
        return _success(where, target, line.body)
    if line.kind in _NOT_RUN_CATEGORY:
        return not_run_outcome(where, target, line.kind, line.message)
    exc = ProviderStatusError(
        f"{target.provider} batch request failed with HTTP {line.status or 400}: "
        f"{line.message or 'no message'}" + (f" (code {line.code})" if line.code else ""),
        status_code=line.status or 400,
        code=line.code,
        error_type=line.error_type,
    )
    return _failure(where, target, exc)


def not_run_outcome(
    where: ItemWhere, target: BatchTarget, kind: str, message: str = ""
) -> BatchItemOutcome:
    """An item the batch never ran (``expired``, ``cancelled``, ``failed``, ``missing``)."""
    category = _NOT_RUN_CATEGORY.get(kind, f"batch_{kind}")
    result: WorkItemResult[Any, Any] = WorkItemResult(
        where.item_id,
        False,
        error=message or f"not run: the provider batch {kind}",
        attempts=1,
        error_category=category,
        duration=where.duration,
        metadata=_metadata(where, target, {}),
    )
    return BatchItemOutcome(result, True, where.chunk_id, where.batch_id)
