"""LiteLLMStrategy: one item's prompt as one provider call, natively or through litellm.

Providers that speak plain HTTP+JSON (OpenAI-compatible chat completions, Anthropic Messages)
take the native transport (aiohttp, a few hundred microseconds of CPU a call); every other
provider goes through ``litellm.acompletion`` (milliseconds a call), imported on first use
only. Both give the same answers: text, structured output, tokens, cost, error categories.
The engine owns retries and timeouts: no SDK retries, each call gets the engine's per-attempt
timeout. ``simulated/<profile>`` models go to an in-process provider simulator. Answers over
``max_response_bytes`` fail their item (:mod:`.response_cap`).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pydantic

from ..llm_strategies import LLMCallStrategy, make_usage
from . import _litellm_import
from ._simulated import (
    SIMULATOR_API_KEY,
    routed_model,
    shared_simulator,
    simulated_profile,
)
from .endpoints import (
    NATIVE_PREFIXES,
    Endpoint,
    Transport,
    build_endpoint,
    check_api_base,
    resolve_transport,
)
from .limits import parse_rate_limits
from .litellm_errors import LiteLLMErrorClassifier
from .provider_errors import MalformedResponseError
from .response_cap import DEFAULT_MAX_RESPONSE_BYTES, check_max_response_bytes, check_reply_size
from .structured import json_schema_format, validated_json, validated_model

if TYPE_CHECKING:
    from ..base import RetryState, TokenUsage
    from ..strategies.errors import ErrorClassifier
    from .limits import ProviderLimits
    from .native.caller import NativeCaller

__all__ = ["LiteLLMStrategy", "usage_from_response"]

# Keywords the strategy owns: the engine's timeout and retries, one message list, no streaming.
_RESERVED_KWARGS = {
    "messages": "the prompt comes from the work item (and system_prompt)",
    "stream": "streaming is not supported",
    "timeout": "each attempt gets ProcessorConfig.timeout_per_item",
    "request_timeout": "each attempt gets ProcessorConfig.timeout_per_item",
    "max_retries": "the engine retries (RetryConfig); SDK retries would be hidden",
    "num_retries": "the engine retries (RetryConfig); SDK retries would be hidden",
}
_MESSAGE_OVERHEAD = 4  # tokens a chat message costs beyond its text (role, separators)
_MIN_SECRET_TO_REDACT = 6  # shorter "keys" are dummies; replacing them would garble text
_LITELLM_HEADER_PREFIX = "llm_provider-"


class _Secret:
    """A string that never shows itself in ``repr``/``str`` (so not in logs or tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class LiteLLMStrategy(LLMCallStrategy[Any]):
    """Sends ``[system?, user]`` messages to ``model``; returns the reply's text.

    ``transport``: ``"auto"`` (native for ``openai/``, ``anthropic/``, ``deepseek/``,
    ``groq/``, ``openrouter/``, ``together_ai/``, ``fireworks_ai/``, ``hosted_vllm/`` and
    ``simulated/``; litellm otherwise), ``"native"`` or ``"litellm"``. With
    ``response_model`` the reply is requested as that JSON schema and returned as a validated
    model instance; a reply that does not validate is retried at once, its tokens billed.
    ``api_key`` defaults to the provider's environment variable (``OPENAI_API_KEY``...) and is
    never shown in ``repr``, logs, errors or metadata. ``api_base``: for OpenAI-compatible
    servers the URL ending in ``/v1``, for Anthropic the host. Other keywords
    (``temperature``, ``max_tokens``...) go to the provider unchanged. The metadata of a call
    holds ``cost`` (None when the model is not priced), ``model``, ``response_id`` and
    ``rate_limits`` (a :class:`~async_batch_llm.providers.limits.ProviderLimits` or None).

    ``max_response_bytes`` (default 8 MiB; None: no cap): an answer larger than this fails
    its item, not retried, category ``response_too_large``. The native transport checks
    ``Content-Length`` first and otherwise stops reading past the cap, so memory stays bounded
    (the tokens the provider billed are then unknown); litellm reads the whole body itself, so
    on that transport the answer is checked after the call (its tokens are counted).
    """

    error_classifier: ErrorClassifier | None = LiteLLMErrorClassifier()

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        system_prompt: str | None = None,
        response_model: type[pydantic.BaseModel] | None = None,
        response_schema: dict[str, Any] | None = None,
        transport: Transport = "auto",
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        **completion_kwargs: Any,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        check_api_base(api_base)
        self.max_response_bytes = check_max_response_bytes(max_response_bytes)
        if response_model is not None and not (
            isinstance(response_model, type) and issubclass(response_model, pydantic.BaseModel)
        ):
            raise ValueError(
                f"response_model must be a pydantic BaseModel subclass, got {response_model!r}"
            )
        for name, why in _RESERVED_KWARGS.items():
            if name in completion_kwargs:
                raise ValueError(f"LiteLLMStrategy does not take {name}=: {why}")
        if (response_model is not None) + (response_schema is not None) + (
            "response_format" in completion_kwargs
        ) > 1:
            raise ValueError("give one of response_model, response_schema or response_format")
        if response_schema is not None:
            completion_kwargs["response_format"] = json_schema_format(response_schema)
        self.model = model
        self.api_base = api_base
        self.system_prompt = system_prompt
        self.response_model = response_model
        self.response_schema = response_schema
        self.completion_kwargs = completion_kwargs
        self._api_key = _Secret(api_key) if api_key else None
        self._profile = simulated_profile(model)
        self._call_model = routed_model(self._profile) if self._profile else model
        if self._profile is not None:
            self._api_key = _Secret(api_key or SIMULATOR_API_KEY)
        self.transport = resolve_transport(model, api_base, transport)
        self._litellm: ModuleType | None = None
        self._native: NativeCaller | None = None
        self._priced: bool | None = None  # is the model in litellm's cost map? (None: unknown)
        self._fixed_tokens = _fixed_token_estimate(system_prompt, completion_kwargs)

    def __repr__(self) -> str:
        parts = [f"model={self.model!r}", f"transport={self.transport!r}"]
        if self.api_base is not None:
            parts.append(f"api_base={self.api_base!r}")
        if self._api_key is not None:
            parts.append("api_key='***'")
        if self.response_model is not None:
            parts.append(f"response_model={self.response_model.__name__}")
        if self.completion_kwargs:
            parts.append(f"completion_kwargs={sorted(self.completion_kwargs)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    async def prepare(self) -> None:
        """Start a simulator for ``simulated/`` models; then set up the native caller (price
        table read off the loop), or import and warm up litellm off the loop (seconds)."""
        if self._litellm is not None or self._native is not None:
            return
        if self._profile is not None:
            simulator = await asyncio.to_thread(shared_simulator, self._profile)
            self.api_base = simulator.base_url
        if self.transport == "native":
            self._native = await asyncio.to_thread(self.native_caller)
            return
        litellm = _litellm_import.loaded() or await asyncio.to_thread(_litellm_import.load_litellm)
        if not _litellm_import.warmed():
            await asyncio.to_thread(_litellm_import.warm_up, self._call_model)
        self._litellm = litellm

    @property
    def simulated(self) -> bool:
        """True for a ``simulated/<profile>`` model (served by an in-process simulator)."""
        return self._profile is not None

    def native_endpoint(self) -> Endpoint:
        """Where native calls go (key and base URL from the environment if not given)."""
        key = self._api_key.reveal() if self._api_key is not None else None
        return build_endpoint(self._call_model, self.api_base, key)

    def native_caller(self) -> NativeCaller:
        """A new native caller for this strategy (reads the price table: call off the loop)."""
        from .native.caller import NativeCaller

        endpoint = self.native_endpoint()
        options = dict(self.completion_kwargs)
        if self.response_model is not None:
            from .structured import model_format

            options["response_format"] = model_format(self.response_model)
        priced = self._profile is None and endpoint.provider in NATIVE_PREFIXES
        caller = NativeCaller(
            endpoint,
            label=self.model,
            system_prompt=self.system_prompt,
            options=options,
            price_provider=endpoint.provider if priced else None,
            max_response_bytes=self.max_response_bytes,
        )
        return caller

    async def cleanup(self) -> None:
        """Close the native transport's HTTP session (litellm keeps its own clients)."""
        native = self._native
        if native is not None:
            await native.close()

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[Any, TokenUsage, dict[str, Any]]:
        """One call: ``(text or model, usage, {cost, model, response_id, rate_limits})``."""
        native = self._native
        if native is None and self._litellm is None:
            await self.prepare()
            native = self._native
        if native is not None:
            text, usage, metadata = await native.call(prompt, timeout)
            return self.shape_output(text, usage, metadata), usage, metadata
        return await self._execute_litellm(prompt, timeout)

    def shape_output(self, text: str, usage: TokenUsage, metadata: dict[str, Any]) -> Any:
        """The reply as the caller asked for it: text, schema-checked JSON or a model (raises
        a retryable error, its tokens billed, when a structured reply does not validate)."""
        if self.response_schema is not None:
            return validated_json(text, self.response_schema, usage, metadata["cost"])
        if self.response_model is not None:
            return validated_model(text, self.response_model, usage, metadata["cost"])
        return text

    async def _execute_litellm(
        self, prompt: str, timeout: float
    ) -> tuple[Any, TokenUsage, dict[str, Any]]:
        """One ``litellm.acompletion`` call."""
        litellm = self._litellm
        assert litellm is not None
        key = self._api_key.reveal() if self._api_key is not None else None
        kwargs = self.completion_kwargs
        if self.response_model is not None:
            kwargs = {**kwargs, "response_format": self.response_model}
        try:
            response = await litellm.acompletion(
                model=self._call_model,
                messages=self._messages(prompt),
                timeout=timeout,
                max_retries=0,
                api_base=self.api_base,
                api_key=key,
                **kwargs,
            )
        except Exception as exc:
            _redact(exc, key)
            _attach_limits(exc)
            raise
        limits = _response_limits(response)
        text = _content(response, limits)
        usage = usage_from_response(response)
        cost = self._cost(litellm, response)
        check_reply_size(
            text,
            _declared_length(response),
            self.max_response_bytes,
            rate_limits=limits,
            token_usage=_billed(usage, cost),
        )
        metadata = {
            "cost": cost,
            "model": self.model,
            "response_id": getattr(response, "id", None),
            "rate_limits": limits,
        }
        return self.shape_output(text, usage, metadata), usage, metadata

    def estimate_tokens(self, prompt: str) -> int:
        """Prompt and system prompt at ~4 characters a token, plus ``max_tokens`` if given."""
        return len(prompt) // 4 + 1 + self._fixed_tokens

    def _messages(self, prompt: str) -> list[dict[str, str]]:
        user = {"role": "user", "content": prompt}
        if self.system_prompt is None:
            return [user]
        return [{"role": "system", "content": self.system_prompt}, user]

    def _cost(self, litellm: ModuleType, response: Any) -> float | None:
        """The call's cost in USD from litellm's bundled map; None when the model is not in it."""
        if self._priced is False:
            return None
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
        if cost is None:
            try:
                cost = litellm.completion_cost(completion_response=response)
            except Exception:
                self._priced = False
                return None
        if not cost and self._priced is None:
            # Older litellm prices unmapped models at 0.0: "unknown" is the honest answer.
            self._priced = _in_cost_map(litellm, self._call_model)
            if not self._priced:
                return None
        self._priced = True
        return float(cost)


def usage_from_response(response: Any) -> TokenUsage:
    """Tokens of a litellm ``ModelResponse``: prompt, completion and cached prompt tokens.

    Cached reads are ``usage.prompt_tokens_details.cached_tokens`` (litellm normalizes
    OpenAI, Anthropic, Gemini, DeepSeek), else Anthropic's ``cache_read_input_tokens``.
    """
    usage = getattr(response, "usage", None)
    if usage is None:
        return make_usage()
    prompt = _int(getattr(usage, "prompt_tokens", 0))
    completion = _int(getattr(usage, "completion_tokens", 0))
    details = getattr(usage, "prompt_tokens_details", None)
    cached = _int(getattr(details, "cached_tokens", 0)) if details is not None else 0
    if not cached:
        cached = _int(getattr(usage, "cache_read_input_tokens", 0))
    return make_usage(prompt, completion, min(cached, prompt) if prompt else cached)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _content(response: Any, limits: ProviderLimits | None) -> str:
    """The first choice's text; no choices or ``content: null`` is a malformed reply."""
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        raise MalformedResponseError(
            "the provider's reply has no choices[0].message.content", rate_limits=limits
        ) from None
    if not isinstance(content, str):
        raise MalformedResponseError(
            "the provider's reply has no text (content is null)", rate_limits=limits
        )
    return content


def _plain_headers(headers: Any) -> dict[str, Any] | None:
    """litellm's response headers with lower-case names and its ``llm_provider-`` prefix off."""
    if not headers:
        return None
    try:
        items = headers.items()
    except AttributeError:
        return None
    plain: dict[str, Any] = {}
    for name, value in items:
        name = str(name).lower()
        plain[name.removeprefix(_LITELLM_HEADER_PREFIX)] = value
    return plain


def _declared_length(response: Any) -> int | None:
    """The Content-Length of the answer litellm read (from its hidden headers), if it kept it."""
    hidden = getattr(response, "_hidden_params", None)
    headers = _plain_headers(hidden.get("additional_headers")) if isinstance(hidden, dict) else None
    try:
        return int((headers or {})["content-length"])
    except (KeyError, TypeError, ValueError):
        return None


def _billed(usage: TokenUsage, cost: float | None) -> dict[str, Any]:
    """What a failed call is billed: its tokens, and its cost when known."""
    billed: dict[str, Any] = dict(usage)
    if cost is not None:
        billed["cost"] = cost
    return billed


def _response_limits(response: Any) -> ProviderLimits | None:
    """The rate limits the provider declared on a litellm response (its hidden headers)."""
    hidden = getattr(response, "_hidden_params", None)
    if not isinstance(hidden, dict):
        return None
    return parse_rate_limits(_plain_headers(hidden.get("additional_headers")))


def _attach_limits(exc: BaseException) -> None:
    """Give a litellm exception the ``rate_limits`` its HTTP answer declared (None if none)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "litellm_response_headers", None)
    with contextlib.suppress(AttributeError, TypeError):
        exc.rate_limits = parse_rate_limits(_plain_headers(headers))  # type: ignore[attr-defined]


def _fixed_token_estimate(system_prompt: str | None, kwargs: dict[str, Any]) -> int:
    """The per-call tokens that do not depend on the prompt: overheads, system, max output."""
    tokens = _MESSAGE_OVERHEAD
    if system_prompt:
        tokens += len(system_prompt) // 4 + 1 + _MESSAGE_OVERHEAD
    max_out = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens")
    if isinstance(max_out, int) and not isinstance(max_out, bool) and max_out > 0:
        tokens += max_out
    return tokens


def _in_cost_map(litellm: ModuleType, model: str) -> bool:
    try:
        info = litellm.get_model_info(model=model)
    except Exception:
        return False
    return bool(info.get("input_cost_per_token") is not None)


def _redact(exc: BaseException, secret: str | None) -> None:
    """Replace the API key in an exception's message, should a provider have echoed it."""
    if not secret or len(secret) < _MIN_SECRET_TO_REDACT:
        return
    if secret not in str(exc) and secret not in repr(exc.args):
        return
    exc.args = tuple(a.replace(secret, "***") if isinstance(a, str) else a for a in exc.args)
    for name in ("message", "litellm_debug_info"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            with contextlib.suppress(AttributeError):
                setattr(exc, name, value.replace(secret, "***"))
