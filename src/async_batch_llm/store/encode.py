"""Turning Python values into what the store keeps: JSON text, output text, clean settings."""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

#: Substrings of a setting's name that mark it as a secret (compared in lower case).
_SECRET_PARTS = ("key", "secret", "password", "passwd", "authorization", "credential", "cookie")
#: A name with "token" is a secret unless it counts tokens: max_tokens, max_tokens_per_minute.
_TOKEN_COUNT = re.compile(r"tokens")
#: Values that are credentials whatever their name: bearer headers, sk-... provider keys.
_SECRET_VALUE = re.compile(r"^\s*(bearer\s+\S+|sk-[A-Za-z0-9_\-]{8,})", re.IGNORECASE)
#: Nested dicts under these names are data (a JSON schema's property names), not settings.
_OPAQUE_PARTS = ("schema", "response_format")


def is_secret_name(name: str) -> bool:
    """True for a setting name that may hold a credential (api_key, auth_token, Authorization)."""
    lowered = name.lower()
    if any(part in lowered for part in _SECRET_PARTS):
        return True
    return "token" in lowered and _TOKEN_COUNT.search(lowered) is None


def strip_secrets(value: Any) -> Any:
    """A copy of ``value`` without credentials, so a run's settings can be stored and shown.

    Drops every mapping key :func:`is_secret_name` flags (at any depth, except inside a
    JSON schema) and every string that looks like a bearer token or an ``sk-`` key.
    """
    if isinstance(value, Mapping):
        clean: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if is_secret_name(name) or _looks_secret(item):
                continue
            opaque = any(part in name.lower() for part in _OPAQUE_PARTS)
            clean[name] = _plain(item) if opaque else strip_secrets(item)
        return clean
    if isinstance(value, list | tuple):
        return [strip_secrets(item) for item in value if not _looks_secret(item)]
    return _plain(value)


def _looks_secret(value: Any) -> bool:
    return isinstance(value, str) and _SECRET_VALUE.match(value) is not None


def _plain(value: Any) -> Any:
    """A JSON-ready version of a settings value (models and dataclasses become dicts)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _json_default(value: Any) -> Any:
    """``json.dumps`` fallback: models, dataclasses, sets and paths, else ``str``."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode


def to_json(value: Any) -> str | None:
    """Compact JSON text of ``value`` (None stays NULL); anything unknown becomes a string."""
    if value is None:
        return None
    return _ENCODE(value)


def from_json(text: str | None) -> Any:
    """The value :func:`to_json` stored (None for NULL)."""
    return None if text is None else json.loads(text)


def clean_text(text: str) -> str:
    """``text`` as SQLite can store and give back: lone surrogates become "?"."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def encode_output(output: Any) -> tuple[str | None, int]:
    """``(text, is_json)`` for an item's output: strings as they are, the rest as JSON.

    Pydantic models use their own ``model_dump_json`` (what a structured-output call
    returns). Never raises: an output that cannot be encoded is stored as its ``repr``.
    """
    if output is None:
        return None, 0
    if type(output) is str:
        return clean_text(output), 0
    try:
        dump = getattr(output, "model_dump_json", None)
        text = dump() if dump is not None else _ENCODE(output)
    except Exception:
        return clean_text(repr(output)), 0
    return clean_text(text), 1


def decode_output(text: str | None, is_json: int) -> Any:
    """The output as a Python value: JSON outputs parsed back, text as it is."""
    if text is None or not is_json:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def new_run_id(now: float | None = None) -> str:
    """A short readable run id: ``r-YYYYMMDD-`` and six random hex digits."""
    stamp = time.strftime("%Y%m%d", time.localtime(time.time() if now is None else now))
    return f"r-{stamp}-{secrets.token_hex(3)}"
