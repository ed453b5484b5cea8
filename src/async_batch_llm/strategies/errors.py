"""Error classification: which failures are retried, which pause the run, which end an item."""

from __future__ import annotations

import asyncio
import math
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..base import TokenUsage


@dataclass
class ErrorInfo:
    """What the engine needs to know about one failure."""

    is_retryable: bool
    is_rate_limit: bool
    is_timeout: bool
    error_category: str
    suggested_wait: float | None = None

    def __post_init__(self) -> None:
        wait = self.suggested_wait
        if wait is not None and (not math.isfinite(wait) or wait < 0):
            self.suggested_wait = None


class FrameworkTimeoutError(TimeoutError):
    """An attempt ran past ``timeout_per_item``: the engine's own limit, not the provider's."""

    def __init__(
        self,
        message: str,
        *,
        item_id: str | None = None,
        elapsed: float | None = None,
        timeout_limit: float | None = None,
    ) -> None:
        super().__init__(message)
        self.item_id = item_id
        self.elapsed = elapsed
        self.timeout_limit = timeout_limit


class TokenTrackingError(Exception):
    """Carries the tokens a failed call still consumed, so failed attempts are billed too."""

    def __init__(self, message: str, *, token_usage: TokenUsage | dict[str, int] | None = None):
        super().__init__(message)
        self.token_usage: dict[str, int] = dict(token_usage or {})


class RateLimitRetriesExceeded(Exception):
    """An item was rate-limited more times than its own rate-limit retry budget allows."""


class StrategyReturnError(TypeError):
    """A strategy's ``execute`` returned something other than ``(output, usage[, metadata])``."""


class ItemSkippedError(Exception):
    """A middleware's ``before_process`` returned ``None``: the item is not processed."""


def failed_attempt_usage(exc: BaseException) -> dict[str, int] | None:
    """Token usage a failed attempt reported through its exception, if any."""
    usage = getattr(exc, "token_usage", None)
    if usage is None:
        usage = getattr(exc, "_failed_token_usage", None)
    if usage is None and exc.__cause__ is not None:
        usage = getattr(exc.__cause__, "token_usage", None)
    return usage if isinstance(usage, dict) and usage else None


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    try:
        millis = headers.get("retry-after-ms")
        raw = headers.get("retry-after")
    except Exception:
        return None
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except (TypeError, ValueError):
            value = -1.0
        if math.isfinite(value) and value >= 0:
            return value
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        try:
            value = parsedate_to_datetime(str(raw)).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    return max(value, 0.0) if math.isfinite(value) else None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an SDK exception carries (``status_code``, ``status`` or the response)."""
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for name in ("status_code", "status", "code"):
            try:
                value = getattr(holder, name, None)
            except Exception:
                value = None
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


class ErrorClassifier(ABC):
    """Turns an exception from a strategy into an :class:`ErrorInfo`."""

    @abstractmethod
    def classify(self, exception: Exception) -> ErrorInfo:
        """Classify one failure."""


_STATUS_RE = re.compile(r"\b(4\d\d|5\d\d)\b")
_RATE_LIMIT_WORDS = (
    "rate limit",
    "rate_limit",
    "ratelimit",
    "resource_exhausted",
    "quota exceeded",
    "too many requests",
)
_NON_RETRYABLE_WORDS = (
    "invalid api key",
    "unauthorized",
    "permission denied",
    "forbidden",
    "insufficient_quota",
    "bad request",
    "context length",
    "content policy",
)


class DefaultErrorClassifier(ErrorClassifier):
    """Provider-agnostic classification by exception type, HTTP status, then message text."""

    def classify(self, exception: Exception) -> ErrorInfo:
        if isinstance(exception, FrameworkTimeoutError | asyncio.TimeoutError | TimeoutError):
            return ErrorInfo(True, False, True, "timeout")
        if _is_validation_error(exception):
            return ErrorInfo(True, False, False, "validation_error")
        if isinstance(exception, ConnectionError | OSError):
            return ErrorInfo(True, False, False, "connection_error")
        status = http_status(exception)
        text = str(exception).lower()
        if status is None:
            match = _STATUS_RE.search(text)
            status = int(match.group(1)) if match else None
        if "insufficient_quota" in text:
            return ErrorInfo(False, False, False, "insufficient_quota")
        if status == 429 or any(word in text for word in _RATE_LIMIT_WORDS):
            wait = parse_retry_after(getattr(getattr(exception, "response", None), "headers", None))
            return ErrorInfo(True, True, False, "rate_limit", suggested_wait=wait)
        if status is not None:
            return _classify_status(status)
        if "timeout" in text or "timed out" in text:
            return ErrorInfo(True, False, True, "timeout")
        if any(word in text for word in _NON_RETRYABLE_WORDS):
            return ErrorInfo(False, False, False, "client_error")
        if "connection" in text:
            return ErrorInfo(True, False, False, "connection_error")
        return ErrorInfo(True, False, False, type(exception).__name__)


def _classify_status(status: int) -> ErrorInfo:
    if status in (408, 504):
        return ErrorInfo(True, False, True, "timeout")
    if status == 401 or status == 403:
        return ErrorInfo(False, False, False, "auth_error")
    if status == 409:
        return ErrorInfo(True, False, False, "conflict")
    if 400 <= status < 500:
        return ErrorInfo(False, False, False, "client_error")
    if status in (502, 503, 529):
        return ErrorInfo(True, False, False, "server_overloaded")
    return ErrorInfo(True, False, False, "server_error")


def _is_validation_error(exception: BaseException) -> bool:
    """pydantic's ValidationError, raised or wrapped (checked by name: pydantic stays optional)."""
    current: BaseException | None = exception
    for _ in range(3):  # the error itself, or a wrapper such as TokenTrackingError around it
        if current is None:
            return False
        for cls in type(current).__mro__:
            if cls.__name__ == "ValidationError" and cls.__module__.startswith("pydantic"):
                return True
        current = current.__cause__
    return False
