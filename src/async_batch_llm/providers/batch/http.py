"""The HTTP side of the batch clients: JSON requests, a multipart upload, JSONL downloads.

One :class:`BatchHttp` per endpoint holds one aiohttp session per event loop. It speaks the
same way the native transport does (keys from :class:`~..endpoints.Endpoint`, errors as
:mod:`..provider_errors` exceptions with any echo of the key redacted), but to the batch
paths, which the per-call :class:`~..native.client.NativeClient` does not know. A results line
over the answer size cap is not held: only its head is kept (:class:`~.types.OversizeLine`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp

from ..endpoints import Endpoint
from ..native.client import auth_headers, redact
from ..provider_errors import (
    MalformedResponseError,
    ProviderConnectionError,
    ProviderStatusError,
    ProviderTimeoutError,
    describe_error_answer,
    missing_key,
)
from .types import OversizeLine

__all__ = ["BatchHttp", "api_root"]

_READ_CHUNK = 1 << 16  # lines are split by hand: a reply line may be longer than any buffer
_OVERSIZE_HEAD = 4096  # bytes kept of a line over the cap: its custom_id is at the start


def api_root(endpoint: Endpoint) -> str:
    """The ``.../v1`` root of an endpoint (its URL is the chat completions or messages URL)."""
    url = endpoint.url.rstrip("/")
    for tail in ("/chat/completions", "/messages"):
        if url.endswith(tail):
            return url[: -len(tail)]
    return url


class BatchHttp:
    """Requests to one provider's API root, authenticated with the endpoint's key."""

    def __init__(
        self, endpoint: Endpoint, *, timeout: float = 300.0, max_line_bytes: int | None = None
    ) -> None:
        self.endpoint = endpoint
        self.max_line_bytes = max_line_bytes
        self.root = api_root(endpoint)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Accept": "application/json", **auth_headers(endpoint)}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"BatchHttp({self.endpoint!r})"

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._loop = loop
        return self._session

    async def close(self) -> None:
        """Close this loop's session (one made on another, finished loop is dropped)."""
        session, self._session = self._session, None
        loop, self._loop = self._loop, None
        if session is not None and not session.closed and loop is asyncio.get_running_loop():
            await session.close()

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        """``GET root+path`` answered with JSON."""
        return _json(await self.request("GET", path, params=params), path)

    async def post_json(self, path: str, body: Any = None) -> Any:
        """``POST root+path`` with a JSON body, answered with JSON."""
        data = json.dumps(body).encode() if body is not None else None
        raw = await self.request("POST", path, data=data, content_type="application/json")
        return _json(raw, path)

    async def listing(self, path: str, *, cursor: str, page_size: int) -> AsyncIterator[Any]:
        """The items of a paged list answer to ``GET root+path``, page after page while the
        provider says it has more; ``cursor`` names the query parameter that takes the last
        item's id."""
        after: str | None = None
        while True:
            params = {"limit": str(page_size)}
            if after:
                params[cursor] = after
            page = await self.get_json(path, params)
            data = page.get("data") if isinstance(page, dict) else None
            if not data:
                return
            for item in data:
                yield item
            if not page.get("has_more"):
                return
            after = str(data[-1].get("id"))

    async def upload(self, path: str, fields: dict[str, str], filename: str, data: bytes) -> Any:
        """``POST root+path`` as multipart/form-data: ``fields`` and one file part ``file``."""
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        form.add_field("file", data, filename=filename, content_type="application/jsonl")
        return _json(await self.request("POST", path, data=form), path)

    async def lines(self, path: str) -> AsyncIterator[bytes | OversizeLine]:
        """The non-blank lines of a JSONL answer to ``GET root+path``, streamed (results files
        can be hundreds of megabytes); a line over ``max_line_bytes`` as an OversizeLine."""
        self._check_key()
        url = self.root + path
        try:
            async with self._session_here().get(url, headers=self._headers) as response:
                if response.status >= 400:
                    raise self._status_error(response.status, await response.read(), f"GET {path}")
                splitter = _LineSplitter(self.max_line_bytes)
                async for chunk in response.content.iter_chunked(_READ_CHUNK):
                    for line in splitter.feed(chunk):
                        yield line
                for line in splitter.feed(b"\n"):
                    yield line
        except TimeoutError:
            raise ProviderTimeoutError(f"no answer from {url}") from None
        except (aiohttp.ClientError, OSError) as exc:
            message = redact(f"connection error to {url}: {exc}", self.endpoint.key)
            raise ProviderConnectionError(message) from None

    def _check_key(self) -> None:
        if (error := missing_key(self.endpoint)) is not None:
            raise error

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: Any = None,
        content_type: str | None = None,
    ) -> bytes:
        """The body of a 2xx answer; an error status or a dropped connection raises."""
        self._check_key()
        endpoint = self.endpoint
        url = self.root + path
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        try:
            async with self._session_here().request(
                method, url, params=params, data=data, headers=headers
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise ProviderTimeoutError(f"no answer from {url}") from None
        except (aiohttp.ClientError, OSError) as exc:
            message = redact(f"connection error to {url}: {exc}", endpoint.key)
            raise ProviderConnectionError(message) from None
        if status >= 400:
            raise self._status_error(status, raw, f"{method} {path}")
        return raw

    def _status_error(self, status: int, raw: bytes, what: str) -> ProviderStatusError:
        message, code, kind = describe_error_answer(raw)
        provider = self.endpoint.provider or "provider"
        described = f"{provider} returned HTTP {status} to {what}: {message or 'no message'}"
        return ProviderStatusError(
            redact(described, self.endpoint.key), status_code=status, code=code, error_type=kind
        )


class _LineSplitter:
    """Splits a stream of bytes into its non-blank lines; of a line over ``cap`` bytes only the
    first few KB are kept (an :class:`OversizeLine`), so memory stays within the cap."""

    def __init__(self, cap: int | None) -> None:
        self._cap = cap
        self._pending = bytearray()
        self._size = 0

    def feed(self, chunk: bytes) -> Iterator[bytes | OversizeLine]:
        """The lines ``chunk`` completes (a final line without a newline: feed ``b"\\n"``)."""
        *whole, rest = chunk.split(b"\n")
        for part in whole:
            self._add(part)
            line = self._take()
            if line is not None:
                yield line
        self._add(rest)

    def _add(self, part: bytes) -> None:
        self._size += len(part)
        if self._cap is None or self._size <= self._cap:
            self._pending += part
        elif len(self._pending) < _OVERSIZE_HEAD:
            self._pending += part[: _OVERSIZE_HEAD - len(self._pending)]
        else:
            del self._pending[_OVERSIZE_HEAD:]

    def _take(self) -> bytes | OversizeLine | None:
        line, size = bytes(self._pending), self._size
        self._pending.clear()
        self._size = 0
        if self._cap is not None and size > self._cap:
            return OversizeLine(line, size, self._cap)
        return line if line.strip() else None


def _json(raw: bytes, path: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise MalformedResponseError(f"the answer to {path} is not JSON") from None
