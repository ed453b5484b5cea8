"""Google Gemini models for :class:`GeminiStrategy`: plain calls, and calls on a context cache.

Both need the Google SDK (``pip install google-genai``): without it, constructing either
raises ``ImportError`` saying so; importing this module never fails. A cached model finds
or creates one provider-side cache in ``prepare()`` (matched by model and ``cache_tags``),
renews it shortly before it expires, and leaves it alive at ``cleanup()`` so the next
batch can reuse it (``delete_cache()`` removes it at once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from typing import Any

from .base import LLMResponse

try:  # the SDK is optional: only these two classes need it
    from google import genai  # type: ignore[attr-defined,import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    genai = None

logger = logging.getLogger(__name__)

#: Marks a cache display name that holds our ``cache_tags`` (the SDK has no metadata field).
TAG_PREFIX = "abl-tags:"


def _require_sdk(cls_name: str) -> None:
    if genai is None:
        raise ImportError(
            f"google-genai is required for {cls_name}. Install it with: pip install google-genai"
        )


def _encode_tags_to_display_name(tags: dict[str, str]) -> str:
    """Tags as a deterministic display name (sorted compact JSON after a prefix)."""
    return TAG_PREFIX + json.dumps(tags, sort_keys=True, separators=(",", ":"))


def _decode_tags_from_display_name(display_name: str | None) -> dict[str, str] | None:
    """The tags a display name holds; None when it was not made by us."""
    if not display_name or not display_name.startswith(TAG_PREFIX):
        return None
    try:
        decoded = json.loads(display_name[len(TAG_PREFIX) :])
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def _extract_metadata(response: Any) -> dict[str, Any] | None:
    """Safety ratings and finish reason of the first candidate (best effort)."""
    metadata: dict[str, Any] = {}
    try:
        candidates = getattr(response, "candidates", None)
        if candidates:
            candidate = candidates[0]
            ratings = getattr(candidate, "safety_ratings", None)
            if ratings:
                metadata["safety_ratings"] = {
                    str(getattr(r, "category", "UNKNOWN")): str(
                        getattr(r, "probability", "UNKNOWN")
                    )
                    for r in ratings
                }
            finish = getattr(candidate, "finish_reason", None)
            if finish:
                metadata["finish_reason"] = str(finish)
    except Exception as error:
        logger.warning("Failed to extract response metadata: %s", error, exc_info=True)
    return metadata or None


def _extract_tokens(response: Any) -> tuple[int, int, int, int]:
    """``(input, output, total, cached)`` tokens of a Gemini response (zeros when absent)."""
    usage = getattr(response, "usage_metadata", None)
    if usage is None:
        logger.debug(
            "No usage_metadata on response (%s); token counts will be zero.",
            type(response).__name__,
        )
        return 0, 0, 0, 0
    return (
        getattr(usage, "prompt_token_count", 0) or 0,
        getattr(usage, "candidates_token_count", 0) or 0,
        getattr(usage, "total_token_count", 0) or 0,
        getattr(usage, "cached_content_token_count", 0) or 0,
    )


def _to_response(response: Any) -> LLMResponse:
    """The SDK's response as an :class:`LLMResponse`; a blocked (empty) one raises."""
    input_tokens, output_tokens, total_tokens, cached = _extract_tokens(response)
    metadata = _extract_metadata(response)
    text = response.text
    if text is None:
        ratings = (metadata or {}).get("safety_ratings")
        detail = f" Safety ratings: {ratings}" if ratings else ""
        raise ValueError(f"Empty response from model (likely blocked by safety filter).{detail}")
    return LLMResponse(text, input_tokens, output_tokens, total_tokens, cached, metadata, response)


class GeminiModel:
    """A Gemini model called through a ``genai.Client``: the plain :class:`LLMModel`."""

    def __init__(
        self,
        model: str,
        client: Any,
        *,
        safety_settings: list[dict[str, Any]] | None = None,
        system_instruction: str | None = None,
    ) -> None:
        _require_sdk("GeminiModel")
        self._model = model
        self._client = client
        self._safety_settings = safety_settings
        self._default_system_instruction = system_instruction

    async def generate(
        self,
        prompt: str | list[Any],
        *,
        temperature: float = 0.0,
        system_instruction: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> LLMResponse:
        """One ``generate_content`` call, normalised."""
        call_config: dict[str, Any] = {"temperature": temperature}
        instruction = system_instruction or self._default_system_instruction
        if instruction is not None:
            call_config["system_instruction"] = instruction
        if self._safety_settings:
            call_config["safety_settings"] = self._safety_settings
        call_config.update(config or {})
        response = await self._client.aio.models.generate_content(
            model=self._model, contents=prompt, config=call_config
        )
        return _to_response(response)


class GeminiCachedModel:
    """A Gemini model whose calls share one provider-side context cache.

    Share ONE instance across the work items that use the cached context: the engine
    prepares each instance once, and a new instance per item would create a cache per item.
    """

    def __init__(
        self,
        model: str,
        client: Any,
        cached_content: list[Any],
        *,
        cache_ttl_seconds: int = 3600,
        cache_renewal_buffer_seconds: int = 300,
        auto_renew: bool = True,
        cache_tags: dict[str, str] | None = None,
        safety_settings: list[dict[str, Any]] | None = None,
    ) -> None:
        _require_sdk("GeminiCachedModel")
        if cache_renewal_buffer_seconds >= cache_ttl_seconds:
            raise ValueError(
                f"cache_renewal_buffer_seconds ({cache_renewal_buffer_seconds}) "
                f"must be less than cache_ttl_seconds ({cache_ttl_seconds})."
            )
        if 10 <= cache_ttl_seconds < 60:
            warnings.warn(
                f"cache_ttl_seconds ({cache_ttl_seconds}) is less than 60 seconds. "
                "Very short TTLs defeat the purpose of caching. "
                "Recommended minimum: 300 seconds (5 minutes).",
                UserWarning,
                stacklevel=2,
            )
        if cache_renewal_buffer_seconds < 60:
            warnings.warn(
                f"cache_renewal_buffer_seconds ({cache_renewal_buffer_seconds}) is less than "
                "60 seconds. Small buffers risk renewing on every call if generation takes "
                "longer than the buffer. Recommended minimum: 60 seconds.",
                UserWarning,
                stacklevel=2,
            )
        self._model = model
        self._client = client
        self._cached_content = cached_content
        self._cache_ttl_seconds = cache_ttl_seconds
        self._cache_renewal_buffer_seconds = cache_renewal_buffer_seconds
        self._auto_renew = auto_renew
        self._cache_tags = cache_tags or {}
        self._safety_settings = safety_settings
        self._cache: Any = None
        self._cache_created_at: float | None = None
        self._cache_lock: asyncio.Lock | None = None
        self._prepared = False

    @property
    def cache_name(self) -> str | None:
        """The name of the cache in use, or None."""
        return self._cache.name if self._cache else None

    def _lock(self) -> asyncio.Lock:
        if getattr(self, "_cache_lock", None) is None:  # also when built without __init__
            self._cache_lock = asyncio.Lock()
        return self._cache_lock  # type: ignore[return-value]

    async def prepare(self) -> None:
        """Find or create the cache (idempotent; concurrent callers wait for the first)."""
        if self._prepared:
            return
        async with self._lock():
            if not self._prepared:
                await self._find_or_create_cache()
                self._prepared = True

    async def cleanup(self) -> None:
        """Leave the cache alive for the next batch (it expires on its own)."""
        if self._cache:
            logger.info(
                "Leaving cache active for reuse: %s (TTL: %ss, will expire naturally)",
                self._cache.name,
                self._cache_ttl_seconds,
            )

    async def delete_cache(self) -> None:
        """Delete the cache now; safe to call concurrently (the provider is asked once)."""
        if self._cache is None:
            return
        async with self._lock():
            cache = self._cache
            if cache is None:
                return
            name = cache.name
            self._cache, self._cache_created_at, self._prepared = None, None, False
            try:
                await self._client.aio.caches.delete(name=name)
                logger.info("Deleted Gemini cache: %s", name)
            except Exception as error:
                logger.warning(
                    "Failed to delete Gemini cache '%s': %s. "
                    "Cache may have already expired or been deleted.",
                    name,
                    error,
                    exc_info=True,
                )

    async def generate(
        self,
        prompt: str | list[Any],
        *,
        temperature: float = 0.0,
        system_instruction: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> LLMResponse:
        """One call on the cached context (renewed first if it is about to expire)."""
        if system_instruction is not None:
            raise ValueError(
                "system_instruction cannot be overridden per-call with cached models. "
                "The system instruction is baked into the cache at creation time."
            )
        if self._auto_renew and self._is_cache_expired():
            await self._renew()
        if self._cache is None:
            raise RuntimeError("Cache not initialized — call prepare() first")
        call_config: dict[str, Any] = {
            "cached_content": self._cache.name,
            "temperature": temperature,
        }
        if self._safety_settings:
            call_config["safety_settings"] = self._safety_settings
        call_config.update(config or {})
        response = await self._client.aio.models.generate_content(
            model=self._model, contents=prompt, config=call_config
        )
        return _to_response(response)

    async def _renew(self) -> None:
        async with self._lock():
            if not self._is_cache_expired():
                return  # another caller renewed it while we waited
            logger.info("Cache expired or about to expire, renewing before API call")
            self._cache, self._cache_created_at, self._prepared = None, None, False
            await self._find_or_create_cache()
            self._prepared = True

    def _is_cache_expired(self) -> bool:
        if self._cache is None or self._cache_created_at is None:
            return True
        expires_in = self._cache_ttl_seconds - (time.time() - self._cache_created_at)
        return expires_in <= self._cache_renewal_buffer_seconds

    def _matches(self, cache: Any) -> bool:
        if not cache.model or not cache.model.endswith(self._model):
            return False
        if not self._cache_tags:
            return True
        tags = _decode_tags_from_display_name(getattr(cache, "display_name", None))
        return tags is not None and all(tags.get(k) == v for k, v in self._cache_tags.items())

    async def _find_or_create_cache(self) -> None:
        try:
            async for cache in await self._client.aio.caches.list():
                if not self._matches(cache):
                    continue
                self._cache = cache
                created = getattr(cache, "create_time", None)
                self._cache_created_at = (
                    created.timestamp() if created else time.time() - self._cache_ttl_seconds
                )
                logger.info("Reusing existing Gemini cache: %s", cache.name)
                return
        except Exception as error:
            logger.warning("Failed to list existing caches: %s", error)
        await self._create_new_cache()

    async def _create_new_cache(self) -> None:
        from google.genai.types import CreateCachedContentConfig  # type: ignore[import-not-found,unused-ignore]

        options: dict[str, Any] = {
            "contents": self._cached_content,
            "ttl": f"{self._cache_ttl_seconds}s",
        }
        if self._cache_tags:
            options["display_name"] = _encode_tags_to_display_name(self._cache_tags)
        self._cache = await self._client.aio.caches.create(
            model=self._model, config=CreateCachedContentConfig(**options)
        )
        self._cache_created_at = time.time()
        logger.info(
            "Created new Gemini cache: %s (TTL: %ss)", self._cache.name, self._cache_ttl_seconds
        )
