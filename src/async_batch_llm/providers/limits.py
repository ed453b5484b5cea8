"""The rate limits a provider declares in its response headers, as one typed value.

OpenAI-style servers send ``x-ratelimit-limit|remaining|reset-requests|tokens`` (resets as Go
durations: ``1s``, ``6m0s``, ``20ms``, ``1m20s``); Anthropic sends
``anthropic-ratelimit-requests|tokens|input-tokens|output-tokens-limit|remaining|reset``
(resets as RFC 3339 times). Both are read into :class:`ProviderLimits`, which the engine can
pace by. Parsing runs on every response, so it is a few dictionary lookups and no regex
unless a header is present.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["ProviderLimits", "parse_duration", "parse_rate_limits", "reset_seconds"]


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """What the provider said about its limits on one response (None: not said).

    ``*_reset_s`` is how many seconds from the response until that budget is full again
    (OpenAI) or resets (Anthropic); ``tokens_*`` is the most restrictive token budget.
    """

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset_s: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_s: float | None = None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}

_OPENAI = ("x-ratelimit-limit-", "x-ratelimit-remaining-", "x-ratelimit-reset-")
_ANTHROPIC_TOKEN_KINDS = ("tokens", "input-tokens", "output-tokens")


def parse_duration(text: str) -> float | None:
    """Seconds of a Go-style duration (``1m20s``, ``6ms``, ``0.5s``) or a bare number."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total, end = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != end:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        end = match.end()
    return total if end == len(text) and end > 0 else None


def reset_seconds(text: str, now: float | None = None) -> float | None:
    """Seconds until a reset given as a duration or an RFC 3339 time (never negative)."""
    duration = parse_duration(text)
    if duration is not None:
        return duration
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _int(text: Any) -> int | None:
    if text is None:
        return None
    try:
        value = int(float(text))
    except (TypeError, ValueError, OverflowError):
        return None
    return value if value >= 0 else None


def _reset(text: Any) -> float | None:
    return reset_seconds(str(text)) if text is not None else None


def _openai_limits(headers: Mapping[str, Any]) -> ProviderLimits | None:
    limit, remaining, reset = _OPENAI
    get = headers.get
    values = (
        _int(get(limit + "requests")),
        _int(get(remaining + "requests")),
        _reset(get(reset + "requests")),
        _int(get(limit + "tokens")),
        _int(get(remaining + "tokens")),
        _reset(get(reset + "tokens")),
    )
    return ProviderLimits(*values) if any(v is not None for v in values) else None


def _anthropic_limits(headers: Mapping[str, Any]) -> ProviderLimits | None:
    get = headers.get
    requests = "anthropic-ratelimit-requests-"
    tokens = next(
        (
            f"anthropic-ratelimit-{kind}-"
            for kind in _ANTHROPIC_TOKEN_KINDS
            if get(f"anthropic-ratelimit-{kind}-remaining") is not None
            or get(f"anthropic-ratelimit-{kind}-limit") is not None
        ),
        "anthropic-ratelimit-tokens-",
    )
    values = (
        _int(get(requests + "limit")),
        _int(get(requests + "remaining")),
        _reset(get(requests + "reset")),
        _int(get(tokens + "limit")),
        _int(get(tokens + "remaining")),
        _reset(get(tokens + "reset")),
    )
    return ProviderLimits(*values) if any(v is not None for v in values) else None


def parse_rate_limits(headers: Mapping[str, Any] | None) -> ProviderLimits | None:
    """The limits declared in ``headers`` (case-insensitive or lower-case keys), else None."""
    if not headers:
        return None
    get = headers.get
    if (
        get("anthropic-ratelimit-requests-remaining") is not None
        or get("anthropic-ratelimit-tokens-remaining") is not None
        or get("anthropic-ratelimit-input-tokens-remaining") is not None
    ):
        return _anthropic_limits(headers)  # before x-ratelimit-*: litellm adds those too
    if (
        get("x-ratelimit-remaining-requests") is not None
        or get("x-ratelimit-limit-requests") is not None
        or get("x-ratelimit-remaining-tokens") is not None
    ):
        return _openai_limits(headers)
    return None
