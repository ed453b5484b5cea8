"""Classify litellm's exceptions by their types, most specific first.

litellm's exception hierarchy has traps (measured on 1.110): 503/502 are not
``InternalServerError``; ``Timeout`` is an openai ``APIConnectionError`` but not litellm's; a
403 can arrive as a bare ``APIError``; a non-JSON 200, a refused connection and a missing key
all arrive as ``InternalServerError``; OpenAI's ``insufficient_quota`` is a plain
``RateLimitError``. This module never imports litellm: an exception can only come from
litellm if litellm is already in ``sys.modules``. The native transport's exceptions
(:mod:`.provider_errors`) get the categories litellm's exceptions get for the same answer.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
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


def _classify_sdk(
    exc: Exception, litellm: ModuleType | None, openai: ModuleType | None
) -> ErrorInfo | None:
    """Classify by litellm/openai exception type; None when the exception is neither's."""
    for name, category in _BAD_REQUEST_KINDS:
        if _is(exc, litellm, name):
            return _fatal(category)
    if _is(exc, litellm, "BadRequestError") or _is(
        exc, openai, "BadRequestError", "UnprocessableEntityError"
    ):
        return _fatal("bad_request")
    if _is(exc, litellm, "AuthenticationError", "PermissionDeniedError") or _is(
        exc, openai, "AuthenticationError", "PermissionDeniedError"
    ):
        return _fatal("auth")
    if _is(exc, litellm, "NotFoundError") or _is(exc, openai, "NotFoundError"):
        return _fatal("not_found")
    if _is(exc, litellm, "RateLimitError") or _is(exc, openai, "RateLimitError"):
        return _rate_limit(exc)
    # litellm.Timeout is an openai APITimeoutError (an openai APIConnectionError): first.
    if _is(exc, litellm, "Timeout") or _is(exc, openai, "APITimeoutError"):
        return _retry("timeout", timeout=True)
    if _is(exc, litellm, "APIConnectionError") or _is(exc, openai, "APIConnectionError"):
        return _retry("connection_error")
    if _is(exc, litellm, "ServiceUnavailableError"):
        return _retry("overloaded")
    if _is(exc, litellm, "BadGatewayError"):
        return _retry("server_error")
    if _is(exc, litellm, "InternalServerError") or _is(exc, openai, "InternalServerError"):
        return _internal_server_error(exc)
    if _is(exc, litellm, "APIResponseValidationError") or _is(
        exc, openai, "APIResponseValidationError"
    ):
        return _VALIDATION
    if _is(exc, litellm, "BudgetExceededError"):
        return _fatal("budget_exceeded")
    if _is(exc, litellm, "APIError") or _is(exc, openai, "APIError"):
        status = http_status(exc)
        if status == 429:
            return _rate_limit(exc)
        if status is not None:
            return _STATUS_INFO.get(status) or (
                _fatal("bad_request") if status < 500 else _retry("server_error")
            )
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
    if "expecting value" in text or "jsondecodeerror" in text or "json decode" in text:
        return _retry("malformed_response")
    if "missing credentials" in text or "api_key client option must be set" in text:
        return _fatal("auth")
    if "connection error" in text or "connection refused" in text:
        return _retry("connection_error")
    return _retry("server_error")


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
