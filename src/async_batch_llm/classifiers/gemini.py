"""Google Gemini error classification (google-genai ``ClientError``/``ServerError`` and text).

Works without google-genai installed: the SDK's exception types are looked up only if the
SDK is already imported, and every other rule reads the exception's type and message.
"""

from __future__ import annotations

import sys

from ..strategies.errors import (
    DEFAULT_RATE_LIMIT_WAIT,
    LOGIC_BUG_TYPES,
    ErrorClassifier,
    ErrorInfo,
    FrameworkTimeoutError,
    is_validation_error,
)

RATE_LIMIT_PATTERNS = ("429", "resource_exhausted", "quota", "rate limit")
TIMEOUT_PATTERNS = ("timeout", "504", "deadline")


def _rate_limit() -> ErrorInfo:
    # Gemini rarely says how long to wait: the reference's 300 s is reported, flagged as a
    # default, so the engine applies its own (configured) cooldown policy.
    return ErrorInfo(
        True,
        True,
        False,
        "rate_limit",
        suggested_wait=DEFAULT_RATE_LIMIT_WAIT,
        suggested_wait_is_default=True,
    )


def _sdk_error_kind(exception: Exception) -> str | None:
    """``"client"`` or ``"server"`` for google-genai's API errors (None otherwise)."""
    errors = sys.modules.get("google.genai.errors")
    if errors is None:
        return None
    for kind, name in (("client", "ClientError"), ("server", "ServerError")):
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and isinstance(exception, cls):
            return kind
    return None


class GeminiErrorClassifier(ErrorClassifier):
    """Classifies Gemini errors: 429/RESOURCE_EXHAUSTED pause the run, timeouts retry."""

    def classify(self, exception: Exception) -> ErrorInfo:
        if isinstance(exception, FrameworkTimeoutError):
            return ErrorInfo(True, False, True, "framework_timeout")
        text = str(exception).lower()
        is_rate_limit = any(pattern in text for pattern in RATE_LIMIT_PATTERNS)
        is_timeout = any(pattern in text for pattern in TIMEOUT_PATTERNS)
        kind = _sdk_error_kind(exception)
        if kind == "client":
            return _rate_limit() if is_rate_limit else ErrorInfo(True, False, False, "client_error")
        if kind == "server":
            # Better than the reference, which gave up on a 500/503: overloads pass.
            category = "server_timeout" if is_timeout else "server_error"
            return ErrorInfo(True, False, is_timeout, category)
        if type(exception).__name__ == "UnexpectedModelBehavior":  # pydantic-ai, not imported
            return ErrorInfo(True, False, False, "validation_error")
        if is_rate_limit:
            return _rate_limit()
        if is_timeout:
            return ErrorInfo(True, False, True, "timeout")
        if is_validation_error(exception):
            return ErrorInfo(True, False, False, "validation_error")
        if isinstance(exception, LOGIC_BUG_TYPES):
            return ErrorInfo(False, False, False, "logic_error")
        return ErrorInfo(True, False, False, "unknown")
