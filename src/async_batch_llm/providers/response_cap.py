"""The cap on the size of a provider's answer: past it the item fails instead of the whole
answer being held in memory and stored.

The native transport checks ``Content-Length`` before it reads and, without one (chunked or
compressed answers), reads in chunks and stops past the cap, so memory stays bounded
(:func:`read_capped`). litellm reads the whole body itself: its answers are checked after the
call (:func:`check_reply_size`). Both raise :class:`~.provider_errors.ResponseTooLargeError`,
which every classifier files as ``response_too_large``, not retryable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .provider_errors import ResponseTooLargeError

if TYPE_CHECKING:
    import aiohttp

    from .limits import ProviderLimits

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "check_max_response_bytes",
    "check_reply_size",
    "read_capped",
    "read_head",
    "size_text",
    "too_large",
]

#: The default cap: far above any chat answer (a 128k-token answer is ~0.5 MB), far below
#: what would strain memory or the store.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024

_READ_CHUNK = 1 << 16
_UTF8_MAX_BYTES_PER_CHAR = 4
_UNCOMPRESSED = ("", "identity")
_UNKNOWN_TOKENS = (
    "The tokens the provider billed for this call are unknown (the answer was cut off before "
    "its usage) and are not counted."
)
_HOW_TO_RAISE = (
    "Raise the cap with max_response_bytes= on the strategy (max_response_mb in a batch "
    "file), or max_response_bytes=None for no cap."
)


def check_max_response_bytes(value: object) -> int | None:
    """``value`` if it is a cap in bytes (an int > 0) or None (no cap); else ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"max_response_bytes must be an int > 0 or None, got {value!r}")
    return value


def size_text(size: int) -> str:
    """``size`` bytes for people: ``512 bytes``, ``64.0 KiB``, ``20.0 MiB``."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def too_large(
    seen: str,
    cap: int,
    *,
    rate_limits: ProviderLimits | None = None,
    token_usage: Mapping[str, Any] | None = None,
    tokens: str = _UNKNOWN_TOKENS,
) -> ResponseTooLargeError:
    """The error for an answer of ``seen`` size over ``cap`` bytes, saying what was billed."""
    message = (
        f"the provider's answer is {seen}, over the {size_text(cap)} cap on answers "
        f"(max_response_bytes={cap}): the item fails without it and is not retried. "
        f"{tokens} {_HOW_TO_RAISE}"
    )
    return ResponseTooLargeError(message, rate_limits=rate_limits, token_usage=token_usage)


async def read_capped(
    response: aiohttp.ClientResponse, cap: int | None, limits: ProviderLimits | None = None
) -> bytes:
    """The body of ``response``; past ``cap`` bytes, :class:`ResponseTooLargeError` (the rest
    is left unread and the connection closed, so at most ``cap`` + one chunk is held)."""
    if cap is None:
        return await response.read()
    declared = response.content_length
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if declared is not None and encoding in _UNCOMPRESSED:
        if declared > cap:
            response.close()
            raise too_large(f"{size_text(declared)} (its Content-Length)", cap, rate_limits=limits)
        return await response.read()
    body = bytearray()
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > cap:
            response.close()
            seen = f"more than {size_text(cap)} (reading stopped at {size_text(len(body))})"
            raise too_large(seen, cap, rate_limits=limits)
    return bytes(body)


async def read_head(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first ``limit`` bytes of the body (an error answer's message is at its start); a
    longer body is left unread past them and its connection closed."""
    declared = response.content_length
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if declared is not None and declared <= limit and encoding in _UNCOMPRESSED:
        return await response.read()
    body = bytearray()
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) >= limit:
            if not response.content.at_eof():
                response.close()
            return bytes(body[:limit])
    return bytes(body)


def check_reply_size(
    text: str,
    declared: int | None,
    cap: int | None,
    *,
    rate_limits: ProviderLimits | None = None,
    token_usage: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`ResponseTooLargeError` when an answer already read whole (its ``text``,
    or the ``declared`` Content-Length if larger) is over ``cap``; its tokens are billed."""
    if cap is None:
        return
    if (declared or 0) <= cap and len(text) * _UTF8_MAX_BYTES_PER_CHAR <= cap:
        return  # cannot be over: no need to encode the text
    size = max(len(text.encode("utf-8")), declared or 0)
    if size <= cap:
        return
    billed = dict(token_usage or {})
    tokens = (
        f"Its tokens are counted ({billed.get('input_tokens', 0)} in, "
        f"{billed.get('output_tokens', 0)} out)."
    )
    raise too_large(
        size_text(size), cap, rate_limits=rate_limits, token_usage=billed, tokens=tokens
    )
