"""Which transport a model takes, where its calls go and which key they carry.

A model name's prefix names its provider (``openai/gpt-4o-mini``, ``anthropic/claude-...``).
Providers that speak plain HTTP+JSON (OpenAI-compatible chat completions, Anthropic Messages)
get the native transport; litellm serves every other one. Keys and base URLs come from the
environment as each provider's own SDK reads them; a key is read when the endpoint is built
and kept only inside it (never in a repr, a log line or an error).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

SIMULATED_PREFIX = "simulated/"  # the same prefix as async_batch_llm.simulator.profiles

__all__ = [
    "NATIVE_PREFIXES",
    "Endpoint",
    "ProviderSpec",
    "Transport",
    "build_endpoint",
    "check_api_base",
    "resolve_transport",
]

Transport = Literal["auto", "native", "litellm"]
Protocol = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """How a provider is reached natively: protocol, default base URL, environment names."""

    protocol: Protocol
    default_base: str | None
    key_variables: tuple[str, ...]
    base_variables: tuple[str, ...] = ()


_PROVIDERS: dict[str, ProviderSpec] = {
    "openai": ProviderSpec(
        "openai",
        "https://api.openai.com/v1",
        ("OPENAI_API_KEY",),
        ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
    ),
    "anthropic": ProviderSpec(
        "anthropic",
        "https://api.anthropic.com",
        ("ANTHROPIC_API_KEY",),
        ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"),
    ),
    "deepseek": ProviderSpec(
        "openai", "https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",), ("DEEPSEEK_API_BASE",)
    ),
    "groq": ProviderSpec(
        "openai", "https://api.groq.com/openai/v1", ("GROQ_API_KEY",), ("GROQ_API_BASE",)
    ),
    "openrouter": ProviderSpec(
        "openai",
        "https://openrouter.ai/api/v1",
        ("OPENROUTER_API_KEY", "OR_API_KEY"),
        ("OPENROUTER_API_BASE",),
    ),
    "together_ai": ProviderSpec(
        "openai",
        "https://api.together.xyz/v1",
        ("TOGETHER_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_API_KEY"),
        ("TOGETHER_API_BASE", "TOGETHERAI_API_BASE"),
    ),
    "fireworks_ai": ProviderSpec(
        "openai",
        "https://api.fireworks.ai/inference/v1",
        ("FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY", "FIREWORKSAI_API_KEY"),
        ("FIREWORKS_API_BASE", "FIREWORKS_AI_API_BASE"),
    ),
    "hosted_vllm": ProviderSpec(
        "openai", None, ("HOSTED_VLLM_API_KEY",), ("HOSTED_VLLM_API_BASE",)
    ),
}

NATIVE_PREFIXES = frozenset(_PROVIDERS)
"""Model prefixes ``transport="auto"`` sends natively (plus ``simulated/``)."""


def _prefix(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else ""


def check_api_base(api_base: str | None) -> None:
    """Raise ``ValueError`` unless ``api_base`` is None or an ``http(s)://host...`` URL."""
    if api_base is None:
        return
    parts = urlsplit(api_base) if isinstance(api_base, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"api_base must be an http:// or https:// URL with a host, got {api_base!r}"
        )


def resolve_transport(
    model: str, api_base: str | None = None, transport: str = "auto"
) -> Literal["native", "litellm"]:
    """The transport a call to ``model`` takes: ``native`` or ``litellm``.

    ``auto`` picks native for ``simulated/`` and the prefixes in :data:`NATIVE_PREFIXES`,
    litellm otherwise. ``native`` is refused (``ValueError``) for a provider with no native
    protocol unless an ``api_base`` is given, which is then spoken to as OpenAI-compatible.
    """
    if transport not in ("auto", "native", "litellm"):
        raise ValueError(f"transport must be 'auto', 'native' or 'litellm', got {transport!r}")
    if transport == "litellm":
        return "litellm"
    native = model.startswith(SIMULATED_PREFIX) or _prefix(model) in NATIVE_PREFIXES
    if transport == "auto":
        return "native" if native else "litellm"
    if not native and api_base is None:
        raise ValueError(
            f"no native transport for {model!r}: use transport='litellm', or give the api_base "
            "of an OpenAI-compatible server"
        )
    return "native"


@dataclass(frozen=True, slots=True, repr=False)
class Endpoint:
    """Where one strategy's native calls go: protocol, URL, the model's wire name, its key."""

    provider: str
    protocol: Protocol
    url: str
    wire_model: str
    key: str | None
    key_variables: tuple[str, ...]
    key_required: bool
    """True for a provider's own hosted API: a call without a key is refused before sending."""

    def __repr__(self) -> str:
        key = "'***'" if self.key else "None"
        return f"Endpoint(provider={self.provider!r}, url={self.url!r}, key={key})"


def _env(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _url(protocol: Protocol, base: str) -> str:
    """The POST URL: ``<base>/chat/completions`` (base ends in /v1) or ``<host>/v1/messages``."""
    base = base.rstrip("/")
    if protocol == "openai":
        return base if base.endswith("/chat/completions") else base + "/chat/completions"
    if base.endswith("/v1/messages"):
        return base
    return base + "/messages" if base.endswith("/v1") else base + "/v1/messages"


def build_endpoint(model: str, api_base: str | None, api_key: str | None) -> Endpoint:
    """The endpoint of a native ``model``; base URL and key from the environment if not given.

    A provider with no native spec (``transport="native"`` with an ``api_base``) is spoken to
    as OpenAI-compatible, with its whole model name on the wire.
    """
    prefix = _prefix(model)
    spec = _PROVIDERS.get(prefix)
    if spec is None:
        spec = ProviderSpec("openai", None, ())
        wire_model = model
    else:
        wire_model = model[len(prefix) + 1 :]
    base = api_base or _env(spec.base_variables) or spec.default_base
    if base is None:
        raise ValueError(
            f"{model!r} needs api_base (or {' / '.join(spec.base_variables) or 'an api_base'})"
        )
    check_api_base(base)
    key = api_key or _env(spec.key_variables)
    hosted = spec.default_base is not None and base.rstrip("/") == spec.default_base
    return Endpoint(
        prefix,
        spec.protocol,
        _url(spec.protocol, base),
        wire_model,
        key,
        spec.key_variables,
        hosted,
    )
