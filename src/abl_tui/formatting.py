"""Short human formats for numbers, durations and costs, shared by every view."""

from __future__ import annotations

import json
import re


def duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 01m``; ``--`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "--"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def count(value: float) -> str:
    """``950``, ``12.3k``, ``4.56M``."""
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.3g}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def rate(value: float, unit: str = "/s") -> str:
    """A per-second rate: ``12.5/s``."""
    return f"{value:.1f}{unit}" if value < 100 else f"{count(value)}{unit}"


def cost(value: float | None) -> str:
    """``$0.0123``; ``unknown`` when the model is not in the cost map (never a fake $0)."""
    if value is None:
        return "unknown"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:.2f}"
    return f"${value:.4f}"


def percent(share: float) -> str:
    """A 0-1 share as ``42.0%``."""
    return f"{share * 100:.1f}%"


#: ``SomeError: `` / ``litellm.SomeError: `` / ``OpenAIException - `` wrappers around the
#: provider's own words (litellm repeats its exception's name two or three times).
_WRAPPER = re.compile(
    r"^\s*(?:(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exceeded|Timeout)\s*(?::|-)\s*)+"
)


#: The native transport's ``openai returned HTTP 503: `` before the provider's message.
_RETURNED = re.compile(r"^[\w.-]+ returned HTTP \d{3}:\s*")


def provider_message(error: str) -> str:
    """The provider's own words in an error text: ``The server is overloaded...`` rather than
    ``ServiceUnavailableError: litellm.ServiceUnavailableError: ...``; JSON bodies give their
    ``message``. The full text stays in the item's detail."""
    text = " ".join(error.split())
    stripped = _RETURNED.sub("", _WRAPPER.sub("", text))
    body = _json_message(stripped)
    if body:
        return body
    return stripped or text


def _json_message(text: str) -> str:
    """The ``message`` (or ``error.message``) of a JSON error body, if ``text`` holds one."""
    start = text.find("{")
    if start < 0:
        return ""
    try:
        body = json.loads(text[start:])
    except ValueError:
        return ""
    while isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict):
                body = value
                break
        else:
            return ""
    return ""
