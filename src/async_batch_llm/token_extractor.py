"""Tokens a failed call still consumed, read from whatever shape its exception carries.

Providers bill failed attempts too (a reply that failed validation was still generated),
so the engine reads their usage from the exception: a ``token_usage`` or
``_failed_token_usage`` dict a strategy attached, a provider's ``usage`` attribute (an
object or a method), or pydantic-ai's ``__cause__.result.usage()``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

_FIELDS = ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens")


def _zeros() -> dict[str, int]:
    return dict.fromkeys(_FIELDS, 0)


class TokenExtractor:
    """Best-effort token usage of a failed call; never raises (except ``CancelledError``)."""

    def extract_from_exception(self, exception: BaseException) -> dict[str, int]:
        """The usage ``exception`` reports, all four fields present; zeros when it has none."""
        try:
            found = _usage_of(exception)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.debug(
                "Could not read token usage from %s: %s; counting zero tokens.",
                type(exception).__name__,
                error,
            )
            return _zeros()
        return found if found is not None else _zeros()

    @staticmethod
    def accumulate(cumulative: dict[str, int], attempt_tokens: dict[str, int]) -> None:
        """Add one attempt's counts into a running total (missing fields count zero)."""
        for key in _FIELDS:
            cumulative[key] = cumulative.get(key, 0) + attempt_tokens.get(key, 0)


def _usage_of(exception: BaseException) -> dict[str, int] | None:
    """The first usage found: pydantic-ai's cause chain, a ``usage`` attribute, a dict."""
    cause = exception.__cause__
    result = getattr(cause, "result", None) if cause is not None else None
    usage_method = getattr(result, "usage", None)
    if callable(usage_method):
        usage = usage_method()
        if usage is not None:
            return _from_object(usage)
    usage = getattr(exception, "usage", None)
    if callable(usage):
        usage = usage()
    if usage is not None:
        return _from_object(usage)
    attached = getattr(exception, "__dict__", {}).get("_failed_token_usage")
    if attached is None:
        attached = getattr(exception, "token_usage", None)
    if isinstance(attached, dict):
        merged = _zeros()
        merged.update({k: v for k, v in attached.items() if isinstance(v, int)})
        return merged
    return None


def _from_object(usage: Any) -> dict[str, int]:
    """A provider usage object (old or new pydantic-ai names) as our dict."""
    if isinstance(usage, dict):
        merged = _zeros()
        merged.update({k: _int(v) for k, v in usage.items() if k in _FIELDS})
        return merged
    input_tokens = _int(getattr(usage, "request_tokens", getattr(usage, "input_tokens", 0)))
    output_tokens = _int(getattr(usage, "response_tokens", getattr(usage, "output_tokens", 0)))
    total = _int(getattr(usage, "total_tokens", 0)) or input_tokens + output_tokens
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total,
        "cached_input_tokens": _int(getattr(usage, "cached_input_tokens", 0)),
    }


def _int(value: Any) -> int:
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0
