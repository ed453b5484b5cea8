"""Run settings: a batch spec's settings as stored with a run, and the strategy they build.

The settings are :class:`~abl_tui.batchfile.BatchSpec` itself (one model, one set of
validation rules); what the store keeps is its dump without the items path. Secrets are
never part of it: API keys come from the environment when the strategy is built.
"""

from __future__ import annotations

import os
from typing import Any

from .batchfile import BatchSpec

RunSettings = BatchSpec

#: Environment variables the providers' SDKs (and litellm) read keys from, by model prefix.
_KEY_VARIABLES = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY", "OR_API_KEY"),
    "together_ai": ("TOGETHER_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_API_KEY"),
    "fireworks_ai": ("FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY", "FIREWORKSAI_API_KEY"),
    "hosted_vllm": ("HOSTED_VLLM_API_KEY",),
}


def stored_settings(spec: BatchSpec) -> dict[str, Any]:
    """What a run stores of its settings: everything but the items path."""
    return spec.model_dump(exclude={"items", "response_schema_file"})


def settings_from_stored(data: dict[str, Any], *, name: str | None = None) -> BatchSpec:
    """Rebuild settings from a stored run (unknown keys from other versions are dropped)."""
    known = set(BatchSpec.model_fields) - {"items", "response_schema_file"}
    fields = {key: value for key, value in data.items() if key in known}
    if name and not fields.get("name"):
        fields["name"] = name
    return BatchSpec.model_validate({**fields, "items": "(stored)"})


def local_api_key(model: str, api_base: str | None) -> str | None:
    """A placeholder key for a local OpenAI-compatible server, when the environment has none.

    litellm refuses a call with no key at all ("Missing credentials"); a server on
    ``api_base`` usually ignores it. A real key always comes from the environment.
    """
    if api_base is None:
        return None
    variables = _KEY_VARIABLES.get(model.split("/", 1)[0], ())
    if any(os.environ.get(name) for name in variables):
        return None
    return "no-key-needed"


def max_response_bytes(settings: BatchSpec) -> int:
    """The strategy's answer size cap in bytes, from ``max_response_mb`` (MiB; at least 1)."""
    return max(1, round(settings.max_response_mb * 1024 * 1024))


def build_strategy(settings: BatchSpec) -> Any:
    """The strategy the settings describe: native HTTP or litellm (``transport``, default
    ``auto``: native for the providers that have it). Neither transport is loaded here;
    an ``api_base`` that is not an http(s) URL raises ``ValueError``."""
    from async_batch_llm.providers.litellm import LiteLLMStrategy

    options: dict[str, Any] = dict(settings.completion_options)
    if settings.temperature is not None:
        options["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        options["max_tokens"] = settings.max_tokens
    if settings.response_schema is not None:
        options["response_schema"] = settings.response_schema
    common: dict[str, Any] = {
        "api_base": settings.api_base,
        "api_key": local_api_key(settings.model, settings.api_base),
        "system_prompt": settings.system_prompt,
        "transport": settings.transport,
        "max_response_bytes": max_response_bytes(settings),
        **options,
    }
    if settings.price_as:
        from .costs import PricedAsStrategy

        return PricedAsStrategy(settings.model, price_as=settings.price_as, **common)
    return LiteLLMStrategy(settings.model, **common)


#: Seconds between two looks at a provider batch while it changes (``$ABL_BATCH_POLL_INTERVAL``
#: overrides it: tests and impatient users); polls stretch up to ten times that while
#: nothing changes (at most five minutes).
BATCH_POLL_INTERVAL = 30.0
BATCH_POLL_ENV = "ABL_BATCH_POLL_INTERVAL"


def batch_poll_interval() -> float:
    """The poll interval in force (``$ABL_BATCH_POLL_INTERVAL``, else 30 s)."""
    raw = os.environ.get(BATCH_POLL_ENV, "").strip()
    if not raw:
        return BATCH_POLL_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{BATCH_POLL_ENV} must be a number of seconds > 0, got {raw!r}")
    return value


def batch_api_config(settings: BatchSpec) -> Any:
    """The engine's :class:`~async_batch_llm.batch_api.BatchApiConfig` for a run's settings."""
    from async_batch_llm.batch_api import BatchApiConfig
    from async_batch_llm.providers.batch import ANTHROPIC_LIMITS, OPENAI_LIMITS, BatchLimits

    limits = None
    if settings.batch_size is not None:
        own = ANTHROPIC_LIMITS if settings.model.startswith("anthropic/") else OPENAI_LIMITS
        limits = BatchLimits(min(settings.batch_size, own.max_requests), own.max_bytes)
    poll = batch_poll_interval()
    return BatchApiConfig(
        poll_interval=poll,
        max_poll_interval=max(poll, min(10 * poll, 300.0)),
        batch_deadline=settings.batch_deadline,
        limits=limits,
        rescue=settings.rescue,
    )
