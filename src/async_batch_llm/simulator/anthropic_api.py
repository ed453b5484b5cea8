"""The Anthropic Messages side of the simulator: request parsing and response bodies.

``POST /v1/messages`` is read into the same :class:`ChatCall` as a chat completion (the
top-level ``system`` becomes the first message), so a prompt costs the same tokens and
obeys the same directives on either endpoint. A forced tool (``tool_choice: {"type":
"tool", "name": ...}``) gets a ``tool_use`` block whose input fits the tool's schema, as
structured output does on Anthropic; ``output_format`` gets the JSON as text.
"""

from __future__ import annotations

import json
from typing import Any

from .protocol import ChatCall, InvalidRequest, build_call, load_body

__all__ = ["error_body", "message_body", "parse_messages_call"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _forced_tool(body: dict[str, Any]) -> tuple[str | None, Any]:
    """The forced tool's name and its input schema, if the request forces one."""
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        return None, None
    name = choice.get("name")
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("name") == name:
            return str(name), tool.get("input_schema")
    raise InvalidRequest(f"tool_choice names a tool that is not in 'tools': {name!r}")


def parse_messages_call(raw: bytes) -> ChatCall:
    """Read a Messages request; 400 on anything unusable (``max_tokens`` is required)."""
    body = load_body(raw)
    max_tokens = body.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 1:
        raise InvalidRequest("max_tokens: field required (a positive integer)")
    system = body.get("system")
    messages = list(body["messages"])
    if system:
        messages.insert(0, {"role": "system", "content": system})
    tool, schema = _forced_tool(body)
    response_format: Any = None
    if tool is not None:
        response_format = {"type": "json_schema", "json_schema": {"schema": schema}}
    elif isinstance(body.get("output_format"), dict):
        response_format = {
            "type": "json_schema",
            "json_schema": {"schema": body["output_format"].get("schema")},
        }
    call = build_call(body["model"], messages, response_format)
    call.tool = tool
    return call


def message_body(
    rid: int, call: ChatCall, reply: str, completion: int, cached: int, written: int
) -> bytes:
    """A ``message`` object: one text (or forced tool_use) block and Anthropic usage."""
    if call.tool is not None:
        try:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_sim_{rid}",
                "name": call.tool,
                "input": json.loads(reply),
            }
        except ValueError:
            block = {"type": "text", "text": reply}
    else:
        block = {"type": "text", "text": reply}
    return json.dumps(
        {
            "id": f"msg_sim_{rid}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [block],
            "stop_reason": "tool_use" if block["type"] == "tool_use" else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": call.prompt_tokens - cached - written,
                "output_tokens": completion,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": cached,
            },
        }
    ).encode()


def empty_body(rid: int, call: ChatCall, kind: str) -> bytes:
    """A 200 with no usable reply: no ``content``, ``content: []`` or a null text."""
    body: dict[str, Any] = {"id": f"msg_sim_{rid}", "type": "message", "model": call.model}
    if kind == "empty_choices":
        body["content"] = []
    elif kind == "null_content":
        body["content"] = None
    body["usage"] = {"input_tokens": call.prompt_tokens, "output_tokens": 0}
    return json.dumps(body).encode()


def error_body(status: int, message: str = "", err_type: str = "") -> bytes:
    """An Anthropic-style ``{"type": "error", "error": {...}}`` body."""
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    kind = err_type or _ERROR_TYPES.get(status, fallback)
    text = message or f"{kind} (simulated {status})"
    return json.dumps({"type": "error", "error": {"type": kind, "message": text}}).encode()
