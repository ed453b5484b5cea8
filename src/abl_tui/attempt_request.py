"""What one call sends besides its prompt, as the attempt inspector shows it and a replay
stores it: the model and its parameters, read from a run's settings. Never a key."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from async_batch_llm.secrets import redact_mapping, redact_url
from async_batch_llm.store import strip_secrets

#: Settings that shape a call, in the order the inspector lists them.
REQUEST_SETTINGS = ("model", "temperature", "max_tokens", "system_prompt", "api_base")
#: What a replay may change beside the prompt (the replay modal's fields).
REPLAY_OPTIONS = ("max_tokens", "temperature")


@dataclass(frozen=True, slots=True)
class Replay:
    """Send one item again with ``prompt`` and the run's settings changed by ``options``
    (``max_tokens``, ``temperature``; empty: the run's own), as a new attempt."""

    item_id: str
    prompt: str
    options: dict[str, Any] = field(default_factory=dict)


def request_parameters(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The model and parameters a run's settings (a stored dump) send with each prompt,
    without credentials (``None`` values left out)."""
    parameters: dict[str, Any] = {}
    for name in REQUEST_SETTINGS:
        value = settings.get(name)
        if value is not None:
            parameters[name] = redact_url(value) if name == "api_base" else value
    options = settings.get("completion_options")
    if isinstance(options, Mapping):
        parameters.update({k: v for k, v in options.items() if v is not None})
    if settings.get("response_schema") is not None:
        parameters["response_schema"] = "(structured output)"
    cleaned: dict[str, Any] = redact_mapping(strip_secrets(parameters))
    return cleaned


def parameters_json(settings: Mapping[str, Any]) -> str:
    """:func:`request_parameters` as the JSON text an attempt row keeps."""
    return json.dumps(request_parameters(settings), sort_keys=True, default=str)
