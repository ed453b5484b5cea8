"""The wire side of the provider simulator: request parsing, directives, response bodies.

Pure functions with no server state, so they are cheap to test and to call per request.
The directive grammar is documented in :mod:`async_batch_llm.simulator.server`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

_DIRECTIVE_RE = re.compile(r"\[\[sim:([^\]]*)\]\]")
_COUNT_RE = re.compile(r"^(?P<head>.*?)(?:\s+x(?P<count>\d+))?\s*$")
_REPLY_OPEN = "[[sim:reply="
_NAMED_KINDS = frozenset(
    {
        "quota",
        "context_window",
        "malformed",
        "no_choices",
        "empty_choices",
        "null_content",
        "reset",
        "slow",
        "ok",
    }
)
EMPTY_KINDS = frozenset({"no_choices", "empty_choices", "null_content"})
"""Directives answering 200 with well-formed JSON that holds no reply."""
_ERROR_KINDS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request"),
    401: ("authentication_error", "invalid_api_key", "Incorrect API key provided"),
    403: ("permission_error", None, "You are not allowed to use this model"),
    404: ("not_found_error", "model_not_found", "The model does not exist"),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached"),
    503: ("server_error", "service_unavailable", "The server is overloaded, try again later"),
    529: ("overloaded_error", None, "Overloaded"),
}


class InvalidRequest(Exception):
    """A request (or directive) the simulator answers with a 400."""


# --- requests ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Directive:
    """One parsed ``[[sim:...]]`` fault directive."""

    kind: str
    count: int | None
    seconds: float | None = None
    retry_after: float | None = None
    retry_form: str = "both"
    """How the wait is written: ``both`` (Retry-After and retry-after-ms), ``seconds``,
    ``date`` (an HTTP date), ``ms`` (retry-after-ms only) or ``reset`` (only
    ``x-ratelimit-remaining-requests: 0`` and ``x-ratelimit-reset-requests`` as ``1m20s``)."""


@dataclass(slots=True)
class ChatCall:
    """The fields of a chat request the simulator needs, read without a schema library."""

    model: str
    text: str
    last_user: str
    prompt_hash: str
    prompt_tokens: int
    response_format: Any
    faults: list[Directive] = field(default_factory=list)
    reply: str | None = None
    directive_error: str | None = None
    """Why a ``[[sim:...]]`` directive could not be parsed (answered with a 400)."""
    tool: str | None = None
    """The tool an Anthropic request forces (its input is the structured reply)."""


def estimate_tokens(text: str) -> int:
    """Cheap deterministic token estimate: one token per four characters, rounded up."""
    return (len(text) + 3) // 4


def _content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict))
        return "".join(p for p in parts if isinstance(p, str))
    return "" if content is None else str(content)


def load_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; 400 on anything else or on ``stream: true``."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    if body.get("stream"):
        raise InvalidRequest("streaming is not supported by the simulator ('stream': true)")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty list")
    return body


def build_call(model: str, messages: list[Any], response_format: Any) -> ChatCall:
    """A :class:`ChatCall` from OpenAI-style messages (the system prompt first, if any)."""
    chunks: list[str] = []
    prompt_tokens = 3
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequest("every message must be an object with 'role' and 'content'")
        role = str(message.get("role", ""))
        content = _content_text(message.get("content"))
        chunks.append(f"{role}\x00{content}\x00")
        prompt_tokens += estimate_tokens(content) + 3
        if role == "user":
            last_user = content
    text = "".join(chunks)
    digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    call = ChatCall(model, text, last_user, digest, prompt_tokens, response_format)
    if "[[sim:" in last_user:
        try:
            call.faults, call.reply = parse_directives(last_user)
        except InvalidRequest as exc:
            call.directive_error = str(exc)
    return call


def parse_call(raw: bytes) -> ChatCall:
    """Read model, messages and response_format from a request body; 400 on anything unusable."""
    body = load_body(raw)
    return build_call(body["model"], body["messages"], body.get("response_format"))


def parse_directives(message: str) -> tuple[list[Directive], str | None]:
    """The fault directives, in order, and the ``reply=`` text of one user message."""
    reply = None
    start = message.find(_REPLY_OPEN)
    end = message.rfind("]]")
    if start >= 0 and end >= start + len(_REPLY_OPEN):
        reply = message[start + len(_REPLY_OPEN) : end]
        message = message[:start] + message[end + 2 :]
    return [parse_directive(m.group(1)) for m in _DIRECTIVE_RE.finditer(message)], reply


def parse_directive(body: str) -> Directive:
    """Parse ``KIND(:OPT=VAL)*( xN)?``; raise :class:`InvalidRequest` naming a bad one."""
    match = _COUNT_RE.match(body.strip())
    assert match is not None  # the pattern matches every string
    kind, *options = match.group("head").strip().split(":")
    count = int(match.group("count")) if match.group("count") else None
    directive = Directive(kind=kind.strip(), count=count)
    try:
        if directive.kind.startswith("slow="):
            directive.kind, directive.seconds = "slow", float(directive.kind[5:])
        for option in options:
            _apply_option(directive, option)
    except ValueError as exc:
        raise InvalidRequest(f"bad simulator directive [[sim:{body}]]: {exc}") from None
    is_status = directive.kind.isdigit() and 400 <= int(directive.kind) <= 599
    if not is_status and directive.kind not in _NAMED_KINDS:
        raise InvalidRequest(f"unknown simulator directive [[sim:{body}]]")
    return directive


RETRY_FORMS = frozenset({"both", "seconds", "date", "ms", "reset"})


def _apply_option(directive: Directive, option: str) -> None:
    """Set ``retry_after=SECONDS`` or ``form=FORM`` on a directive (ValueError otherwise)."""
    key, _, value = option.partition("=")
    key, value = key.strip(), value.strip()
    if key == "retry_after":
        directive.retry_after = float(value)
    elif key == "form" and value in RETRY_FORMS:
        directive.retry_form = value
    else:
        raise ValueError(f"unknown option {option!r}")


def select_fault(faults: list[Directive], attempt: int) -> Directive | None:
    """The directive that governs the ``attempt``-th (0-based) request of one prompt."""
    start = 0
    for directive in faults:
        if directive.count is None or attempt < start + directive.count:
            return directive
        start += directive.count
    return None


# --- responses --------------------------------------------------------------------------------


def schema_example(schema: Any, defs: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A minimal value fitting a JSON schema: required fields filled with plain values."""
    if not isinstance(schema, dict) or depth > 32:
        return None
    defs = defs if defs is not None else (schema.get("$defs") or schema.get("definitions") or {})
    if "$ref" in schema:
        return schema_example(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1]), defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or () if o.get("type") != "null"]
        if options:
            return schema_example(options[0], defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {
            k: schema_example(props.get(k), defs, depth + 1) for k in schema.get("required", [])
        }
    if kind == "array":
        return [schema_example(schema.get("items"), defs, depth + 1)] * schema.get("minItems", 0)
    simple = {"string": "sim", "integer": 0, "number": 0, "boolean": False}
    return simple.get(kind) if isinstance(kind, str) else None


#: Words that give a product away, by catalogue label: a prompt that asks to pick one label
#: (from a list, or a schema's enum) gets the label a classifier would pick, so simulated
#: runs of the demo answer like the task ("electronics"), not with an echo.
_LABEL_CUES: dict[str, tuple[str, ...]] = {
    "electronics": (
        "ssd", "headphones", "smartwatch", "hdmi", "speaker", "power bank", "charger",
        "webcam", "earbuds", "laptop", "phone charger",
    ),
    "home_kitchen": (
        "skillet", "plates", "air fryer", "cutting board", "knife", "french press",
        "food containers", "duvet", "candle", "mixer", "kettle",
    ),
    "apparel": (
        "belt", "sneakers", "socks", "jacket", "sweatshirt", "sweater", "shorts", "scarf",
        "chinos",
    ),
    "sports_outdoors": (
        "dumbbells", "yoga mat", "tent", "chalk bag", "helmet", "water bottle",
        "resistance bands", "sleeping bag", "running vest", "trekking poles",
    ),
    "beauty": (
        "trimmer", "serum", "face mask", "toothbrush", "hair dryer", "hand cream", "lip balm",
        "makeup", "sunscreen", "shampoo",
    ),
    "toys_games": (
        "easel", "magnetic tiles", "experiment kit", "board game", "card game", "puzzle",
        "train set", "plush", "remote control car", "building blocks",
    ),
    "grocery": (
        "sparkling water", "almond butter", "rice", "chocolate", "olive oil", "tea bags",
        "maple syrup", "oats", "salt flakes", "coffee beans",
    ),
    "office": (
        "desk organizer", "monitor stand", "notebook", "office chair", "pens", "label maker",
        "shredder", "stapler", "sticky notes", "markers",
    ),
    "automotive": (
        "jump starter", "wash mitt", "wiper", "car phone", "car vacuum", "dash cam",
        "roof cargo", "seat covers", "tyre", "windshield",
    ),
    "pet_supplies": ("dog", "aquarium", "pet", "bird feeder", "cat", "catnip"),
}  # fmt: skip
_CUE_RE = {
    label: re.compile(r"\b(?:" + "|".join(map(re.escape, cues)) + r")\b", re.IGNORECASE)
    for label, cues in _LABEL_CUES.items()
}
_LABEL_LIST_RE = re.compile(r"list:\s*([a-z][a-z_]*(?:,\s*[a-z][a-z_]*)+)")


def classify(text: str, labels: list[str]) -> str | None:
    """The label among ``labels`` whose cue word comes first in ``text`` (a title comes before
    its description), or None when none of them has a cue there."""
    best: tuple[int, str] | None = None
    for label in labels:
        pattern = _CUE_RE.get(label)
        match = pattern.search(text) if pattern is not None else None
        if match is not None and (best is None or match.start() < best[0]):
            best = (match.start(), label)
    return best[1] if best is not None else None


def _list_answer(text: str) -> str | None:
    """A label for a prompt that asks to pick one "from this list: a, b, c" (else None)."""
    found = _LABEL_LIST_RE.search(text)
    if found is None:
        return None
    labels = [label.strip() for label in found.group(1).split(",")]
    answer = classify(text[found.end() :], labels)
    if answer is not None:
        return answer
    return "unknown" if "unknown" in text[found.end() :] else labels[0]


def _schema_answer(schema: Any, text: str) -> Any:
    """A schema-shaped value whose enum-valued top-level fields are classified from ``text``."""
    example = schema_example(schema)
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(example, dict) and isinstance(properties, dict):
        for name, spec in properties.items():
            labels = spec.get("enum") if isinstance(spec, dict) else None
            if name in example and isinstance(labels, list):
                answer = classify(text, [str(label) for label in labels])
                if answer is not None:
                    example[name] = answer
    return example


def reply_text(call: ChatCall) -> str:
    """The reply: the ``reply=`` directive, a schema-shaped JSON object, a label for a prompt
    that asks to pick one, or an echo."""
    if call.reply is not None:
        return call.reply
    echo = f"sim reply to {call.last_user[:40]}"
    fmt = call.response_format if isinstance(call.response_format, dict) else {}
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return json.dumps(_schema_answer(schema, call.last_user))
    if fmt.get("type") == "json_object":
        return json.dumps({"reply": echo})
    return _list_answer(call.last_user) or echo


def completion_body(rid: int, call: ChatCall, reply: str, completion: int, cached: int) -> bytes:
    """A standard ``chat.completion`` object with usage and cached prompt tokens."""
    return json.dumps(
        {
            "id": f"chatcmpl-sim-{rid}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": call.prompt_tokens + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }
    ).encode()


def empty_completion_body(rid: int, call: ChatCall, kind: str) -> bytes:
    """A 200 ``chat.completion`` with no reply: no ``choices``, ``[]`` or ``content: null``."""
    body: dict[str, Any] = {"id": f"chatcmpl-sim-{rid}", "object": "chat.completion"}
    body["model"] = call.model
    if kind == "empty_choices":
        body["choices"] = []
    elif kind == "null_content":
        message = {"role": "assistant", "content": None}
        body["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
    body["usage"] = {"prompt_tokens": call.prompt_tokens, "completion_tokens": 0}
    return json.dumps(body).encode()


def error_body(
    status: int, message: str = "", err_type: str = "", code: str | None = None
) -> bytes:
    """An OpenAI-style ``{"error": {...}}`` body, with defaults by status."""
    default_type, default_code, default_message = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error")
    )
    error = {
        "message": message or f"{default_message} (simulated {status})",
        "type": err_type or default_type,
        "param": None,
        "code": code if code is not None else default_code,
    }
    return json.dumps({"error": error}).encode()


def retry_headers(seconds: float, form: str = "both", anthropic: bool = False) -> dict[str, str]:
    """The headers that ask for a wait: ``Retry-After`` (whole seconds, rounded up) and
    ``retry-after-ms`` by default, or one :data:`RETRY_FORMS` form alone (``reset`` in the
    endpoint's own rate-limit headers)."""
    if form == "date":
        return {"Retry-After": formatdate(time.time() + seconds, usegmt=True)}
    if form == "reset":
        from .limits import Budget, anthropic_headers, go_duration

        if anthropic:
            budget = Budget(1, 0, None, 0, seconds)
            return anthropic_headers(budget, time.time())
        reset = go_duration(seconds)
        return {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset}
    headers = {}
    if form in ("both", "seconds"):
        headers["Retry-After"] = str(math.ceil(seconds))
    if form in ("both", "ms"):
        headers["retry-after-ms"] = str(math.ceil(seconds * 1000))
    return headers
