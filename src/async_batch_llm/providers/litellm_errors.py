"""Classify litellm's exceptions by their types, most specific first.

litellm's exception hierarchy has traps (measured on 1.110): 503/502 are not
``InternalServerError``; ``Timeout`` is an openai ``APIConnectionError`` but not litellm's; a
403 can arrive as a bare ``APIError``; a non-JSON 200, a refused connection and a missing key
all arrive as ``InternalServerError``; OpenAI's ``insufficient_quota`` is a plain
``RateLimitError``. This module never imports litellm: an exception can only come from
litellm if litellm is already in ``sys.modules``. The native transport's exceptions
(:mod:`.provider_errors`) get the categories litellm's exceptions get for the same answer;
an answer over the size cap is ``response_too_large`` on both (not retried).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from ..strategies.errors import (
    DefaultErrorClassifier,
    ErrorClassifier,
    ErrorInfo,
    FrameworkTimeoutError,
    TokenTrackingError,
    http_status,
    parse_retry_after,
)
from .limits import parse_rate_limits
from .provider_errors import (
    MalformedResponseError,
    MissingKeyError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    ResponseTooLargeError,
)

__all__ = ["LiteLLMErrorClassifier", "StructuredOutputError"]


class StructuredOutputError(TokenTrackingError):
    """A reply that does not validate against ``response_model``.

    Retried at once (category ``validation_error``); carries the call's tokens (and cost) so
    the failed attempt is still billed. The pydantic ``ValidationError`` is its ``__cause__``.
    """


def _fatal(category: str) -> ErrorInfo:
    return ErrorInfo(False, False, False, category)


def _retry(category: str, *, timeout: bool = False) -> ErrorInfo:
    return ErrorInfo(True, False, timeout, category)


_VALIDATION = _retry("validation_error")
_RESPONSE_TOO_LARGE = _fatal("response_too_large")

# litellm's BadRequestError subclasses, checked before BadRequestError itself.
_BAD_REQUEST_KINDS = (
    ("ContextWindowExceededError", "context_window"),
    ("ContentPolicyViolationError", "content_policy"),
    ("UnsupportedParamsError", "bad_request"),
    ("PaymentRequiredError", "payment_required"),
)

_STATUS_INFO: dict[int, ErrorInfo] = {
    400: _fatal("bad_request"),
    401: _fatal("auth"),
    402: _fatal("payment_required"),
    403: _fatal("auth"),
    404: _fatal("not_found"),
    408: _retry("timeout", timeout=True),
    409: _retry("conflict"),
    413: _fatal("bad_request"),
    422: _fatal("bad_request"),
    500: _retry("server_error"),
    502: _retry("server_error"),
    503: _retry("overloaded"),
    504: _retry("timeout", timeout=True),
    529: _retry("overloaded"),
}


class LiteLLMErrorClassifier(ErrorClassifier):
    """An :class:`ErrorClassifier` for litellm (and openai SDK) exceptions.

    Anything that is not a litellm/openai exception, including the engine's own
    ``FrameworkTimeoutError`` and pydantic's ``ValidationError``, is classified as
    :class:`DefaultErrorClassifier` does.
    """

    def __init__(self) -> None:
        self._fallback = DefaultErrorClassifier()

    def classify(self, exception: Exception) -> ErrorInfo:
        if isinstance(exception, StructuredOutputError):
            return _VALIDATION
        if isinstance(exception, FrameworkTimeoutError):
            return self._fallback.classify(exception)
        if isinstance(exception, ProviderError):
            return _classify_native(exception)
        litellm = sys.modules.get("litellm")
        openai = sys.modules.get("openai")
        info = None
        if litellm is not None or openai is not None:
            info = _classify_sdk(exception, litellm, openai)
        return info if info is not None else self._fallback.classify(exception)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _is(exc: BaseException, module: ModuleType | None, *names: str) -> bool:
    """``isinstance(exc, module.<name>)`` for any name the module has (absent names skipped)."""
    if module is None:
        return False
    for name in names:
        cls = getattr(module, name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def _bad_request(exc: Exception) -> ErrorInfo:
    """litellm maps every Anthropic 4xx it does not know (409...) to BadRequestError."""
    status = http_status(exc)
    if status is not None and status != 400 and status in _STATUS_INFO:
        return _STATUS_INFO[status]
    return _fatal("bad_request")


# litellm wraps a reply it could not take apart (no content, not JSON) as APIConnectionError.
_UNPARSED_REPLY_WORDS = (
    "traceback (most recent call last)",
    "unable to get json response",
    "expecting value",
)


def _connection_error(exc: Exception) -> ErrorInfo:
    text = str(exc).lower()
    if any(word in text for word in _UNPARSED_REPLY_WORDS):
        return _retry("malformed_response")
    return _retry("connection_error")


def _by_status(exc: Exception) -> ErrorInfo | None:
    """A generic SDK ``APIError``: by the HTTP status it carries."""
    status = http_status(exc)
    if status == 429:
        return _rate_limit(exc)
    if status is None:
        return None
    return _STATUS_INFO.get(status) or (
        _fatal("bad_request") if status < 500 else _retry("server_error")
    )


# (litellm class names, openai class names, classification), most specific first.
# litellm.Timeout is an openai APITimeoutError (an openai APIConnectionError): before it.
_SDK_KINDS: tuple[tuple[tuple[str, ...], tuple[str, ...], Callable[[Exception], Any]], ...] = (
    *(((name,), (), lambda _e, c=category: _fatal(c)) for name, category in _BAD_REQUEST_KINDS),
    (("BadRequestError",), ("BadRequestError", "UnprocessableEntityError"), _bad_request),
    (
        ("AuthenticationError", "PermissionDeniedError"),
        ("AuthenticationError", "PermissionDeniedError"),
        lambda _e: _fatal("auth"),
    ),
    (("NotFoundError",), ("NotFoundError",), lambda _e: _fatal("not_found")),
    (("RateLimitError",), ("RateLimitError",), lambda e: _rate_limit(e)),
    (("Timeout",), ("APITimeoutError",), lambda _e: _retry("timeout", timeout=True)),
    (("APIConnectionError",), ("APIConnectionError",), lambda e: _connection_error(e)),
    (("ServiceUnavailableError",), (), lambda _e: _retry("overloaded")),
    (("BadGatewayError",), (), lambda _e: _retry("server_error")),
    (("InternalServerError",), ("InternalServerError",), lambda e: _internal_server_error(e)),
    (("APIResponseValidationError",), ("APIResponseValidationError",), lambda _e: _VALIDATION),
    (("BudgetExceededError",), (), lambda _e: _fatal("budget_exceeded")),
    (("APIError",), ("APIError",), _by_status),
)


def _classify_sdk(
    exc: Exception, litellm: ModuleType | None, openai: ModuleType | None
) -> ErrorInfo | None:
    """Classify by litellm/openai exception type; None when the exception is neither's."""
    for litellm_names, openai_names, classification in _SDK_KINDS:
        if _is(exc, litellm, *litellm_names) or _is(exc, openai, *openai_names):
            info: ErrorInfo | None = classification(exc)
            return info
    return None


_CONTEXT_WORDS = (
    "maximum context length",
    "context window",
    "prompt is too long",
    "too many tokens",
)


def _classify_native(exc: ProviderError) -> ErrorInfo:
    """Categories for the native transport's errors, as litellm's for the same answer."""
    if isinstance(exc, ProviderStatusError):
        return _native_status(exc)
    if isinstance(exc, MalformedResponseError):
        return _retry("malformed_response")
    if isinstance(exc, ResponseTooLargeError):
        return _RESPONSE_TOO_LARGE
    if isinstance(exc, ProviderTimeoutError):
        return _retry("timeout", timeout=True)
    if isinstance(exc, ProviderConnectionError):
        return _retry("connection_error")
    if isinstance(exc, MissingKeyError):
        return _fatal("auth")
    return _retry("server_error")


def _native_status(exc: ProviderStatusError) -> ErrorInfo:
    """An HTTP error answer: by status, with the 400s litellm tells apart by code or text."""
    status = exc.status_code
    if status == 429:
        return _rate_limit(exc)
    if status == 400:
        text = str(exc).lower()
        if exc.code == "context_length_exceeded" or any(w in text for w in _CONTEXT_WORDS):
            return _fatal("context_window")
        if exc.code in ("content_policy_violation", "content_filter"):
            return _fatal("content_policy")
    return _STATUS_INFO.get(status) or (
        _fatal("bad_request") if status < 500 else _retry("server_error")
    )


def _internal_server_error(exc: Exception) -> ErrorInfo:
    """A 500 from litellm may really be a non-JSON body, a dropped connection or a missing key."""
    text = str(exc).lower()
    if any(word in text for word in _MALFORMED_WORDS):
        return _retry("malformed_response")
    if "missing credentials" in text or "api_key client option must be set" in text:
        return _fatal("auth")
    if any(word in text for word in _CONNECTION_WORDS):
        return _retry("connection_error")
    if http_status(exc) == 529 or "overloaded_error" in text:
        return _retry("overloaded")
    return _retry("server_error")


_MALFORMED_WORDS = ("expecting value", "jsondecodeerror", "json decode", "no 'choices'")
_CONNECTION_WORDS = (
    "connection error",
    "connection refused",
    "server disconnected",
    "cannot connect to host",
    "connect call failed",
)


def _rate_limit(exc: Exception) -> ErrorInfo:
    """A 429: out of quota (not transient) or a rate limit with the provider's Retry-After."""
    if _is_insufficient_quota(exc):
        return _fatal("insufficient_quota")
    return ErrorInfo(True, True, False, "rate_limit", suggested_wait=retry_after(exc))


def _is_insufficient_quota(exc: Exception) -> bool:
    """OpenAI's billing quota error: ``body["code"]`` (litellm overwrites ``exc.code``)."""
    if isinstance(exc, ProviderStatusError) and "insufficient_quota" in (exc.code, exc.error_type):
        return True
    body: Any = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error")
        fields = error if isinstance(error, Mapping) else body
        if "insufficient_quota" in (fields.get("code"), fields.get("type")):
            return True
    text = str(exc).lower()
    return "insufficient_quota" in text or "check your plan and billing" in text


def retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked to wait, if it said.

    ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); failing those, the reset
    of the exhausted budget in the rate-limit headers (``x-ratelimit-reset-requests: 1m20s``,
    ``anthropic-ratelimit-tokens-reset``). Looks at the HTTP response's headers, then
    ``litellm_response_headers``, then ``headers`` (litellm leaves that None for provider 429s).
    """
    response = getattr(exc, "response", None)
    found = [
        _lower_keys(headers)
        for headers in (
            getattr(response, "headers", None),
            getattr(exc, "litellm_response_headers", None),
            getattr(exc, "headers", None),
        )
    ]
    for headers in found:
        wait = parse_retry_after(headers)
        if wait is not None:
            return wait
    for headers in found:
        wait = _reset_wait(headers)
        if wait is not None:
            return wait
    return None


def _reset_wait(headers: dict[str, Any] | None) -> float | None:
    """Seconds until the exhausted budget resets (the earliest reset if none says 0 left)."""
    limits = parse_rate_limits(
        {k.removeprefix("llm_provider-"): v for k, v in headers.items()} if headers else None
    )
    if limits is None:
        return None
    if limits.requests_remaining == 0 and limits.requests_reset_s is not None:
        return limits.requests_reset_s
    if limits.tokens_remaining == 0 and limits.tokens_reset_s is not None:
        return limits.tokens_reset_s
    resets = [w for w in (limits.requests_reset_s, limits.tokens_reset_s) if w is not None]
    return min(resets) if resets else None


def _lower_keys(headers: Any) -> dict[str, Any] | None:
    """Headers as a plain dict with lower-case names (httpx, aiohttp or a dict)."""
    if not headers:
        return None
    try:
        return {str(key).lower(): value for key, value in headers.items()}
    except (AttributeError, TypeError):
        return None
