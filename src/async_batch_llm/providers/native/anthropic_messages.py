"""Anthropic Messages on the wire: the request body (as litellm builds it) and the parsed reply.

Structured output uses a forced tool named ``json_tool_call`` whose input is the JSON, the
way litellm does it for models without native structured output; the reply is that input
as JSON text.
"""

from __future__ import annotations

import json
from typing import Any

from ..provider_errors import MalformedResponseError
from .reply import Reply

__all__ = ["ANTHROPIC_VERSION", "JSON_TOOL", "parse_reply", "request_body"]

ANTHROPIC_VERSION = "2023-06-01"
JSON_TOOL = "json_tool_call"
DEFAULT_MAX_TOKENS = 4096  # litellm's default when the price table has no max output


def _json_schema(response_format: Any) -> dict[str, Any] | None:
    """The schema of an OpenAI-style ``response_format`` (json_schema or json_object)."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return dict(schema) if isinstance(schema, dict) else {"type": "object"}
    if response_format.get("type") == "json_object":
        return {"type": "object", "additionalProperties": True, "properties": {}}
    return None


def request_body(
    wire_model: str,
    prompt: str,
    system_prompt: str | None,
    options: dict[str, Any],
    default_max_tokens: int,
) -> dict[str, Any]:
    """The Messages body: OpenAI-style options mapped to Anthropic's names."""
    options = dict(options)
    max_tokens = options.pop("max_tokens", None) or options.pop("max_completion_tokens", None)
    options.pop("max_completion_tokens", None)
    body: dict[str, Any] = {
        "model": wire_model,
        "max_tokens": max_tokens or default_max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    if system_prompt:
        body["system"] = system_prompt
    stop = options.pop("stop", None)
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    schema = _json_schema(options.pop("response_format", None))
    if schema is not None:
        body["tools"] = [{"name": JSON_TOOL, "input_schema": schema}]
        body["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
    body.update(options)
    return body


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _text(content: Any) -> str:
    """The reply's text blocks joined, or the forced JSON tool's input as JSON."""
    if not isinstance(content, list) or not content:
        raise MalformedResponseError("the provider's reply has no content blocks")
    texts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_use" and block.get("name") == JSON_TOOL:
            return json.dumps(block.get("input"))
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
    if not texts:
        raise MalformedResponseError("the provider's reply has no text block")
    return "".join(texts)


def parse_reply(data: Any) -> Reply:
    """Text, tokens and id of a Messages reply; ``prompt_tokens`` includes cache reads/writes."""
    if not isinstance(data, dict):
        raise MalformedResponseError("the provider's reply is not a JSON object")
    text = _text(data.get("content"))
    usage = data.get("usage")
    uncached = completion = read = write = 0
    if isinstance(usage, dict):
        uncached = _int(usage.get("input_tokens"))
        completion = _int(usage.get("output_tokens"))
        read = _int(usage.get("cache_read_input_tokens"))
        write = _int(usage.get("cache_creation_input_tokens"))
    response_id = data.get("id")
    return Reply(
        text,
        uncached + read + write,
        completion,
        read,
        write,
        response_id if isinstance(response_id, str) else None,
    )
