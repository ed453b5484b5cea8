"""Structured output: the ``response_format`` to ask for, and the reply checked against it.

Shared by both transports, so a reply that does not fit fails the same way on either: a
retryable, billed :class:`StructuredOutputError`.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic

from .litellm_errors import StructuredOutputError

__all__ = [
    "json_schema_format",
    "model_format",
    "strict_schema",
    "validated_json",
    "validated_model",
]


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI-style ``response_format`` asking for JSON that fits ``schema``."""
    if not isinstance(schema, dict):
        raise ValueError(f"response_schema must be a JSON schema object, got {schema!r}")
    name = str(schema.get("title") or "output").replace(" ", "_")[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def strict_schema(node: Any) -> Any:
    """A JSON schema made strict as OpenAI wants it: every object closed, every field required."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_schema(value) for key, value in node.items()}
    if out.get("type") == "object" or "properties" in out:
        out.setdefault("additionalProperties", False)
        out["required"] = list((out.get("properties") or {}).keys())
    return out


def model_format(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The strict ``json_schema`` response format of a pydantic model (as litellm sends it)."""
    return {
        "type": "json_schema",
        "json_schema": {
            "schema": strict_schema(model.model_json_schema()),
            "name": model.__name__,
            "strict": True,
        },
    }


def _billed(usage: Any, cost: float | None) -> dict[str, Any]:
    billed: dict[str, Any] = dict(usage)
    if cost is not None:
        billed["cost"] = cost
    return billed


def validation_message(model: type[pydantic.BaseModel], exc: pydantic.ValidationError) -> str:
    """A short description of why a reply did not validate (no reply text: it may be long)."""
    errors = exc.errors(include_url=False, include_input=False)
    first: Any = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or "reply"
    return (
        f"the reply does not match {model.__name__}: {len(errors)} validation error(s), "
        f"first at {where}: {first.get('msg', 'invalid')}"
    )


def validated_model(
    text: str, model: type[pydantic.BaseModel], usage: Any, cost: float | None
) -> pydantic.BaseModel:
    """The reply as a validated ``model`` instance; a retryable, billed error when it is not."""
    try:
        return model.model_validate_json(text)
    except pydantic.ValidationError as exc:
        raise StructuredOutputError(
            validation_message(model, exc), token_usage=_billed(usage, cost)
        ) from exc


def validated_json(text: str, schema: dict[str, Any], usage: Any, cost: float | None) -> Any:
    """The reply parsed as JSON and checked against ``schema`` (jsonschema, litellm's own
    dependency); a reply that does not fit is a retryable, billed validation failure."""
    import jsonschema  # type: ignore[import-untyped]

    try:
        value = json.loads(text)
        jsonschema.validate(value, schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        reason = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
        raise StructuredOutputError(
            f"the reply does not fit response_schema: {reason}", token_usage=_billed(usage, cost)
        ) from exc
    return value
