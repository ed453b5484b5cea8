"""Error classification: which failures are retried, which pause the run, which end an item."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from ..errors import AblError

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
    #: True when ``suggested_wait`` is a classifier's fixed default rather than what the
    #: provider asked for: the engine then uses its own cooldown policy instead.
    suggested_wait_is_default: bool = False

    def __post_init__(self) -> None:
        wait = self.suggested_wait
        if wait is not None and (not math.isfinite(wait) or wait < 0):
            self.suggested_wait = None


class FrameworkTimeoutError(AblError, TimeoutError):
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


class TokenTrackingError(AblError):
    """Carries the tokens a failed call still consumed, so failed attempts are billed too."""

    def __init__(self, message: str, *, token_usage: TokenUsage | dict[str, int] | None = None):
        super().__init__(message)
        self._failed_token_usage: dict[str, int] = dict(token_usage or {})  # type: ignore[arg-type]

    @property
    def token_usage(self) -> dict[str, int]:
        """The tokens the failed call consumed."""
        return self._failed_token_usage


class RateLimitRetriesExceeded(AblError):
    """An item was rate-limited more times than its own rate-limit retry budget allows."""


class StrategyReturnError(AblError, TypeError):
    """A strategy's ``execute`` returned something other than ``(output, usage[, metadata])``."""


def failed_attempt_usage(exc: BaseException) -> dict[str, int] | None:
    """Token usage a failed attempt reported through its exception, if any."""
    usage = getattr(exc, "token_usage", None)
    if usage is None:
        usage = getattr(exc, "_failed_token_usage", None)
    if usage is None and exc.__cause__ is not None:
        usage = getattr(exc.__cause__, "token_usage", None)
    if isinstance(usage, dict):
        return usage or None
    if getattr(exc, "usage", None) is None and exc.__cause__ is None:
        return None  # the common case: nothing more to look at
    from ..token_extractor import TokenExtractor

    found = TokenExtractor().extract_from_exception(exc)
    return found if any(found.values()) else None


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
#: The reference's rate-limit patterns, matched case-insensitively in the message.
RATE_LIMIT_PATTERNS = ("429", "resource_exhausted", "quota", "rate limit")
_RATE_LIMIT_WORDS = (*RATE_LIMIT_PATTERNS, "rate_limit", "ratelimit", "too many requests")
#: The reference's fixed wait for a rate limit whose provider gave none (classifiers report
#: it flagged as a default: the engine then applies its own cooldown policy).
DEFAULT_RATE_LIMIT_WAIT = 300.0
_NON_RETRYABLE_WORDS = (
    "invalid api key",
    "unauthorized",
    "permission denied",
    "forbidden",
    "bad request",
    "context length",
    "content policy",
)
#: Deterministic programming errors: retrying cannot fix them, so the item fails at once.
LOGIC_BUG_TYPES: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    NameError,
    ZeroDivisionError,
    AssertionError,
)

_FRAMEWORK_TIMEOUT = ErrorInfo(True, False, True, "framework_timeout")
_API_TIMEOUT = ErrorInfo(True, False, True, "api_timeout")
_CONNECTION = ErrorInfo(True, False, False, "connection_error")
_VALIDATION = ErrorInfo(True, False, False, "validation_error")
_LOGIC = ErrorInfo(False, False, False, "logic_error")
_UNKNOWN = ErrorInfo(True, False, False, "unknown")


def matches_rate_limit(text: str) -> bool:
    """Whether a lower-cased error message reads as a rate limit."""
    return any(word in text for word in _RATE_LIMIT_WORDS)


class DefaultErrorClassifier(ErrorClassifier):
    """Provider-agnostic classification: the reference's rules, refined by HTTP status.

    Rate limits (status 429 or the reference's message patterns) carry the provider's
    ``Retry-After`` when the exception has one; an out-of-credit quota error is not
    retried; pydantic validation errors (and undecodable JSON) are retried at once;
    logic bugs (``TypeError``, ``AttributeError``, ``NameError``...) fail the item at once.
    """

    def classify(self, exception: Exception) -> ErrorInfo:
        if isinstance(exception, FrameworkTimeoutError):
            return _FRAMEWORK_TIMEOUT
        text = str(exception).lower()
        status = http_status(exception)
        if "insufficient_quota" in text:
            return ErrorInfo(False, False, False, "insufficient_quota")
        if status == 429 or (status is None and matches_rate_limit(text)):
            wait = parse_retry_after(getattr(getattr(exception, "response", None), "headers", None))
            return ErrorInfo(True, True, False, "rate_limit", suggested_wait=wait)
        if isinstance(exception, asyncio.TimeoutError | TimeoutError):
            return _API_TIMEOUT
        if is_validation_error(exception) or isinstance(exception, json.JSONDecodeError):
            return _VALIDATION
        if isinstance(exception, ConnectionError):
            return _CONNECTION
        if status is not None:
            return _classify_status(status)
        return _classify_by_type_and_text(exception, text)


def _classify_by_type_and_text(exception: Exception, text: str) -> ErrorInfo:
    """The rest: logic bugs, then what the message says, then retryable ``unknown``."""
    if isinstance(exception, LOGIC_BUG_TYPES):
        return _LOGIC
    match = _STATUS_RE.search(text)
    if match:
        return _classify_status(int(match.group(1)))
    if "timeout" in text or "timed out" in text:
        return _API_TIMEOUT
    if "connection" in text or isinstance(exception, OSError):
        return _CONNECTION
    if any(word in text for word in _NON_RETRYABLE_WORDS):
        return ErrorInfo(False, False, False, "client_error")
    return _UNKNOWN


def _classify_status(status: int) -> ErrorInfo:
    if status in (408, 504):
        return _API_TIMEOUT
    if status == 401 or status == 403:
        return ErrorInfo(False, False, False, "auth_error")
    if status == 409:
        return ErrorInfo(True, False, False, "conflict")
    if 400 <= status < 500:
        return ErrorInfo(False, False, False, "client_error")
    if status in (502, 503, 529):
        return ErrorInfo(True, False, False, "server_overloaded")
    return ErrorInfo(True, False, False, "server_error")


def is_validation_error(exception: BaseException) -> bool:
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
