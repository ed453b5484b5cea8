"""What each event carries: one ``TypedDict`` per :class:`ProcessingEvent`, the one place
the event contract is written down.

At run time a payload is a plain ``dict`` (observers keep reading it with ``data[...]`` or
``data.get(...)``); to mypy it is the typed dict named here, so the engine building a
payload and the run store reading one fail type checking, not silently, when a key is
renamed. Keys beyond the reference's are ours (``ENGINE_CONTRACT.md``: payloads are
supersets of the reference keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from .base import ProcessingEvent

if TYPE_CHECKING:
    from ..base import TokenUsage, WorkItemResult


class BatchStarted(TypedDict):
    """``BATCH_STARTED``: workers are about to start."""

    total: int  # items added so far (streaming mode: more may come)
    max_workers: int
    start_time: float  # wall-clock (``time.time()``)
    streaming: bool


class BatchCompleted(TypedDict):
    """``BATCH_COMPLETED``: every worker has ended (or the run was cancelled)."""

    processed: int
    succeeded: int
    failed: int
    total: int
    total_tokens: int
    cached_input_tokens: int
    duration: float  # seconds since the start
    cancelled: bool


class WorkerStarted(TypedDict):
    """``WORKER_STARTED``."""

    worker_id: int


class WorkerStopped(TypedDict):
    """``WORKER_STOPPED``: the worker ended (input done, retired or cancelled)."""

    worker_id: int


class ItemStarted(TypedDict):
    """``ITEM_STARTED``: sent before every attempt, retries included."""

    item_id: str
    worker_id: int
    attempt: int  # 1-based, counting every call made for the item


class ItemCompleted(TypedDict):
    """``ITEM_COMPLETED``: the item succeeded (its result is final)."""

    item_id: str
    worker_id: int
    duration: float
    attempts: int
    tokens: TokenUsage  # every attempt's tokens, failed ones included
    cost: float | None  # None: unknown
    result: WorkItemResult[Any, Any]
    #: The provider's rate-limit snapshot on the successful answer, when it sent one.
    rate_limits: NotRequired[dict[str, Any]]


class ItemFailed(TypedDict):
    """``ITEM_FAILED``: the item failed for good (every terminal failure sends one)."""

    item_id: str
    worker_id: int
    error: str | None
    error_type: str  # the exception's class name ("ItemSkipped" for a middleware skip)
    error_category: str
    attempts: int
    duration: float
    tokens: TokenUsage
    cost: float | None
    result: WorkItemResult[Any, Any]
    #: The failed attempt's HTTP status and the provider's rate-limit snapshot on it
    #: (absent when the attempt had none: no HTTP call, or the provider sent no headers).
    status: NotRequired[int]
    rate_limits: NotRequired[dict[str, Any]]


class ItemRetry(TypedDict):
    """``ITEM_RETRY``: an attempt failed and the item will be tried again after ``wait``."""

    item_id: str
    worker_id: int
    attempt: int  # the attempt that failed
    wait: float
    error_type: str
    error_category: str
    error: str
    tokens: dict[str, int] | None  # what the failed attempt still used, if it said
    #: The failed attempt's HTTP status and the provider's rate-limit snapshot on it
    #: (absent when the attempt had none: no HTTP call, or the provider sent no headers).
    status: NotRequired[int]
    rate_limits: NotRequired[dict[str, Any]]


class RateLimitHit(TypedDict):
    """``RATE_LIMIT_HIT``: an attempt was rate-limited (it does not use up ``max_attempts``)."""

    item_id: str
    worker_id: int
    attempt: int
    error: str
    suggested_wait: float | None  # what the provider (or the classifier) suggested
    #: The rate-limited attempt's HTTP status and the provider's rate-limit snapshot on it
    #: (absent when the attempt had none: no HTTP call, or the provider sent no headers).
    status: NotRequired[int]
    rate_limits: NotRequired[dict[str, Any]]


class CooldownStarted(TypedDict):
    """``COOLDOWN_STARTED``: every worker pauses until the cooldown ends."""

    worker_id: int
    duration: float
    consecutive: int
    until: float  # wall-clock end
    provider_wait: float | None  # the provider's Retry-After, if it sent one


class CooldownEnded(TypedDict):
    """``COOLDOWN_ENDED``."""

    duration: float


class LimitsLearned(TypedDict):
    """``LIMITS_LEARNED``: the provider's declared limits moved the pace (``rpm``/``tpm``:
    the pace in force now, the lower of configured and declared)."""

    requests_limit: float | None
    requests_remaining: float | None
    requests_reset_s: float | None
    tokens_limit: float | None
    tokens_remaining: float | None
    tokens_reset_s: float | None
    rpm: float | None
    tpm: float | None


#: Any event's payload.
Payload = (
    BatchStarted
    | BatchCompleted
    | WorkerStarted
    | WorkerStopped
    | ItemStarted
    | ItemCompleted
    | ItemFailed
    | ItemRetry
    | RateLimitHit
    | CooldownStarted
    | CooldownEnded
    | LimitsLearned
)

#: The payload type of every event (a test keeps it complete).
PAYLOAD_TYPES: dict[ProcessingEvent, type] = {
    ProcessingEvent.BATCH_STARTED: BatchStarted,
    ProcessingEvent.BATCH_COMPLETED: BatchCompleted,
    ProcessingEvent.WORKER_STARTED: WorkerStarted,
    ProcessingEvent.WORKER_STOPPED: WorkerStopped,
    ProcessingEvent.ITEM_STARTED: ItemStarted,
    ProcessingEvent.ITEM_COMPLETED: ItemCompleted,
    ProcessingEvent.ITEM_FAILED: ItemFailed,
    ProcessingEvent.ITEM_RETRY: ItemRetry,
    ProcessingEvent.RATE_LIMIT_HIT: RateLimitHit,
    ProcessingEvent.COOLDOWN_STARTED: CooldownStarted,
    ProcessingEvent.COOLDOWN_ENDED: CooldownEnded,
    ProcessingEvent.LIMITS_LEARNED: LimitsLearned,
}
