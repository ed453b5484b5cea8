"""Exceptions of the native transport (and of replies either transport finds unusable).

Each carries what classification needs (status, provider error code, headers) and the
``rate_limits`` the response declared, so the engine can pace by them.
:class:`~async_batch_llm.providers.litellm_errors.LiteLLMErrorClassifier` maps them to the
same categories as litellm's exceptions for the same answer. Messages never hold an API key:
the transport redacts any echo of it before an exception is built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AblError
from .limits import ProviderLimits

if TYPE_CHECKING:
    from .endpoints import Endpoint

__all__ = [
    "MalformedResponseError",
    "MissingKeyError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "ResponseTooLargeError",
    "describe_error_answer",
    "missing_key",
]

_ERROR_TEXT_LIMIT = 2000  # characters of a non-JSON error answer kept in the message


class ProviderError(AblError):
    """A call to a provider failed; ``rate_limits`` is what its answer declared, if any."""

    def __init__(self, message: str, *, rate_limits: ProviderLimits | None = None) -> None:
        super().__init__(message)
        self.rate_limits = rate_limits


class ProviderStatusError(ProviderError):
    """The provider answered with an HTTP error status (4xx/5xx)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        rate_limits: ProviderLimits | None = None,
    ) -> None:
        super().__init__(message, rate_limits=rate_limits)
        self.status_code = status_code
        self.code = code
        self.error_type = error_type
        self.headers: dict[str, str] = dict(headers or {})


class ProviderConnectionError(ProviderError):
    """No answer: the connection was refused, reset or closed mid-reply."""


class ProviderTimeoutError(ProviderError):
    """No answer within the attempt's timeout (the transport's own clock)."""


class MalformedResponseError(ProviderError):
    """A 2xx whose body is not the JSON the protocol promises (no ``choices``, no content...)."""


class ResponseTooLargeError(ProviderError):
    """A 2xx answer larger than the strategy's ``max_response_bytes``: the item fails, not
    retried (the same prompt would most likely get as long an answer again).

    ``token_usage`` is what the call is known to have used (litellm reads the whole answer, so
    its usage is known), or None when the answer was cut off before its usage was read.
    """

    def __init__(
        self,
        message: str,
        *,
        rate_limits: ProviderLimits | None = None,
        token_usage: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, rate_limits=rate_limits)
        self.token_usage: dict[str, Any] | None = dict(token_usage) if token_usage else None


class MissingKeyError(ProviderError):
    """No API key given nor found in the provider's environment variables."""


def missing_key(endpoint: Endpoint) -> MissingKeyError | None:
    """The error to raise before calling ``endpoint`` without the key it needs, else None."""
    if endpoint.key is None and endpoint.key_required:
        names = " or ".join(endpoint.key_variables) or "api_key"
        return MissingKeyError(f"no API key for {endpoint.provider}: set {names}")
    return None


def describe_error_answer(raw: bytes) -> tuple[str, str | None, str | None]:
    """``(message, code, type)`` of an HTTP error answer's body: from its JSON error object,
    or the start of its text when it is not JSON."""
    text = raw[: _ERROR_TEXT_LIMIT * 4].decode("utf-8", "replace")
    try:
        return describe_body(json.loads(text))
    except ValueError:
        return text[:_ERROR_TEXT_LIMIT], None, None


def describe_body(body: Any) -> tuple[str, str | None, str | None]:
    """``(message, code, type)`` of an OpenAI- or Anthropic-style error body, as far as given."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        message = error.get("message")
        code = error.get("code")
        kind = error.get("type")
        return (
            message if isinstance(message, str) else "",
            str(code) if code is not None else None,
            kind if isinstance(kind, str) else None,
        )
    if isinstance(error, str):
        return error, None, None
    message = body.get("message") if isinstance(body, Mapping) else None
    return (message if isinstance(message, str) else ""), None, None
