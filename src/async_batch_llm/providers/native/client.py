"""The native transport: one POST per call over a shared keep-alive aiohttp session.

One :class:`NativeClient` per strategy holds one ``ClientSession`` per event loop (a session
belongs to the loop that made it), whose connector pools connections without a limit of
its own: the engine's workers bound how many calls are in flight, so the pool grows to the
worker count and keeps those connections alive between calls. Errors become the exceptions
of :mod:`async_batch_llm.providers.provider_errors`, with any echo of the key redacted. An
answer over ``max_response_bytes`` is not read past the cap (:mod:`..response_cap`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from ..endpoints import Endpoint
from ..limits import ProviderLimits, parse_rate_limits
from ..provider_errors import (
    MalformedResponseError,
    ProviderConnectionError,
    ProviderStatusError,
    ProviderTimeoutError,
    describe_error_answer,
    missing_key,
)
from ..response_cap import (
    DEFAULT_MAX_RESPONSE_BYTES,
    check_max_response_bytes,
    read_capped,
    read_head,
)
from . import anthropic_messages, openai_chat
from .codec import dumps, loads
from .reply import Reply

__all__ = ["NativeClient", "auth_headers", "redact"]

_MIN_SECRET_TO_REDACT = 6  # shorter "keys" are dummies; replacing them would garble text
_KEEPALIVE_SECONDS = 30.0
_ERROR_BODY_BYTES = 64 * 1024  # of an error answer: its message is in the first few KB


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    if secret and len(secret) >= _MIN_SECRET_TO_REDACT and secret in text:
        return text.replace(secret, "***")
    return text


def auth_headers(endpoint: Endpoint) -> dict[str, str]:
    """The headers that authenticate to ``endpoint`` (and Anthropic's API version)."""
    if endpoint.protocol == "anthropic":
        headers = {"anthropic-version": anthropic_messages.ANTHROPIC_VERSION}
        if endpoint.key:
            headers["x-api-key"] = endpoint.key
        return headers
    return {"Authorization": f"Bearer {endpoint.key}"} if endpoint.key else {}


class NativeClient:
    """Sends one protocol's requests to one endpoint and parses the replies.

    ``max_response_bytes``: the largest answer read (None: no cap); a larger one raises
    :class:`~..provider_errors.ResponseTooLargeError` without being read whole.
    """

    __slots__ = ("_endpoint", "_headers", "_loop", "_max_bytes", "_session", "_timeouts")

    def __init__(
        self, endpoint: Endpoint, *, max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES
    ) -> None:
        self._endpoint = endpoint
        self._max_bytes = check_max_response_bytes(max_response_bytes)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **auth_headers(endpoint),
        }
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def __repr__(self) -> str:
        return f"NativeClient({self._endpoint!r})"

    @property
    def protocol(self) -> str:
        return self._endpoint.protocol

    @property
    def max_response_bytes(self) -> int | None:
        """The largest answer this client reads (None: no cap)."""
        return self._max_bytes

    @max_response_bytes.setter
    def max_response_bytes(self, value: int | None) -> None:
        self._max_bytes = check_max_response_bytes(value)

    def _session_here(self) -> aiohttp.ClientSession:
        """This loop's session, made on first use (a session from another loop is dropped)."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._loop is loop and not session.closed:
            return session
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=0, keepalive_timeout=_KEEPALIVE_SECONDS, ttl_dns_cache=300
        )
        session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None), skip_auto_headers=()
        )
        self._session, self._loop = session, loop
        return session

    async def close(self) -> None:
        """Close this loop's session (a session of another, finished loop is just dropped)."""
        session, self._session = self._session, None
        loop, self._loop = self._loop, None
        if session is None or session.closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is running:
            await session.close()

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def post(
        self, body: dict[str, Any], timeout: float
    ) -> tuple[Reply, ProviderLimits | None]:
        """POST ``body``; the parsed reply and the limits its headers declared."""
        endpoint = self._endpoint
        if (error := missing_key(endpoint)) is not None:
            raise error
        session = self._session_here()
        try:
            async with session.post(
                endpoint.url,
                data=dumps(body),
                headers=self._headers,
                timeout=self._timeout(timeout),
            ) as response:
                status = response.status
                headers = response.headers
                limits = parse_rate_limits(headers)
                if status >= 400:
                    raw = await read_head(response, _ERROR_BODY_BYTES)
                else:
                    raw = await read_capped(response, self._max_bytes, limits)
        except TimeoutError:
            raise ProviderTimeoutError(f"no answer from {endpoint.url} within {timeout}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            message = redact(f"connection error to {endpoint.url}: {exc}", endpoint.key)
            raise ProviderConnectionError(message) from None
        if status >= 400:
            raise self._status_error(status, raw, headers, limits)
        try:
            data = loads(raw)
        except ValueError:
            raise MalformedResponseError(
                f"the provider's reply is not JSON (HTTP {status}, {len(raw)} bytes)",
                rate_limits=limits,
            ) from None
        try:
            if endpoint.protocol == "anthropic":
                return anthropic_messages.parse_reply(data), limits
            return openai_chat.parse_reply(data), limits
        except MalformedResponseError as exc:
            exc.rate_limits = limits
            raise

    def _status_error(
        self, status: int, raw: bytes, headers: Any, limits: ProviderLimits | None
    ) -> ProviderStatusError:
        """The exception for an HTTP error answer, its message redacted of the key."""
        message, code, kind = describe_error_answer(raw)
        provider = self._endpoint.provider or "provider"
        described = f"{provider} returned HTTP {status}: {message or 'no message'}"
        if code:
            described += f" (code {code})"
        return ProviderStatusError(
            redact(described, self._endpoint.key),
            status_code=status,
            code=code,
            error_type=kind,
            headers={k.lower(): v for k, v in headers.items() if _kept_header(k)},
            rate_limits=limits,
        )


def _kept_header(name: str) -> bool:
    """Headers worth keeping on an error: waits and limits, nothing that could hold a secret."""
    name = name.lower()
    return name.startswith(("retry-after", "x-ratelimit-", "anthropic-ratelimit-"))
