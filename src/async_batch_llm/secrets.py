"""Every secret this process can send, and its removal from any text before it is kept or shown.

Three tiers, applied in this order by :func:`redact`:

1. known values: keys found in the environment (``OPENAI_API_KEY``, ``*_TOKEN``, passwords in
   ``*_URL`` userinfo, ...) and keys strategies register with :func:`register_secret`;
2. places a credential sits whatever it is: URL userinfo, ``Authorization``/``x-api-key``
   headers, ``?key=`` query parameters, ``api_key=...`` and ``"token": "..."`` pairs;
3. a safety net of well-known key shapes (``sk-...``, ``sk-ant-...``, ``AIza...``, JWTs).

Values shorter than :data:`MIN_SECRET_LENGTH` are never treated as known secrets: local
servers' dummy keys ("sim-key", "any") would otherwise garble ordinary text.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "RedactingFilter",
    "is_secret_name",
    "redact",
    "redact_mapping",
    "redact_url",
    "refresh_environment",
    "register_secret",
    "unregister_secret",
]

#: What a secret is replaced with.
MASK = "***"
#: Shorter values are dummies, not secrets: replacing them would garble text.
MIN_SECRET_LENGTH = 8

# --- tier 1: known values --------------------------------------------------------------------

#: Environment variable names (upper case) that hold a credential.
_ENV_SECRET_NAME = re.compile(
    r"(?:^|_)(?:API_?KEY|APIKEY|KEY|TOKEN)$|SECRET|PASSWORD|PASSWD|ACCESS_KEY|CREDENTIAL|(?:^|_)AUTH$"
)
#: ... unless they name where a credential lives rather than the credential itself.
_ENV_NOT_SECRET = re.compile(r"_(?:FILE|PATH|DIR|HOST|PORT|REGION|ENDPOINT|VERSION|TYPE|MODE)$")

_lock = threading.Lock()
_registered: dict[str, int] = {}  # value -> how many registrations hold it
_env_values: tuple[str, ...] = ()
_env_size = -1  # len(os.environ) when it was last read; -1: never read
_known: tuple[str, ...] = ()  # env + registered values and their URL-encoded forms, longest first


def _variants(value: str) -> list[str]:
    """The forms a secret can appear in: as it is, stripped, percent-encoded, JSON-escaped."""
    stripped = value.strip()
    forms = {value, stripped, quote(stripped, safe=""), json.dumps(stripped)[1:-1]}
    return [form for form in forms if len(form) >= MIN_SECRET_LENGTH]


def _userinfo_secrets(value: str) -> list[str]:
    """The password (or a lone token-like user name) of a URL's userinfo, if it has one."""
    if "://" not in value or "@" not in value:
        return []
    try:
        parts = urlsplit(value.strip())
        password, user = parts.password, parts.username
    except ValueError:
        return []
    return [password] if password else ([user] if user else [])


def _scan_environment() -> tuple[str, ...]:
    """Credential values in ``os.environ``: by variable name, and userinfo of URL values."""
    found: list[str] = []
    for name, value in os.environ.items():
        upper = name.upper()
        if _ENV_SECRET_NAME.search(upper) and not _ENV_NOT_SECRET.search(upper):
            found.append(value)
        found.extend(_userinfo_secrets(value))
    return tuple(found)


def _rebuild() -> None:
    """Recompute the known values (caller holds the lock)."""
    global _known
    values = {form for raw in (*_env_values, *_registered) for form in _variants(raw)}
    _known = tuple(sorted(values, key=len, reverse=True))  # a longer secret goes first


def refresh_environment() -> None:
    """Read the environment again (it is read at first use and whenever its size changes)."""
    global _env_values, _env_size
    with _lock:
        _env_size = len(os.environ)
        _env_values = _scan_environment()
        _rebuild()


def _known_values() -> tuple[str, ...]:
    if len(os.environ) != _env_size:  # O(1): a variable was added or removed since the scan
        refresh_environment()
    return _known


def register_secret(value: str | None) -> None:
    """Remember a credential this process sends (a strategy's ``api_key``), to redact it."""
    if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _registered[value] = _registered.get(value, 0) + 1
        _rebuild()


def unregister_secret(value: str | None) -> None:
    """Undo one :func:`register_secret` of ``value`` (the environment's values stay known)."""
    if not isinstance(value, str):
        return
    with _lock:
        count = _registered.pop(value, 0)
        if count > 1:
            _registered[value] = count - 1
        _rebuild()


# --- tiers 2 and 3: where credentials sit, and what they look like ---------------------------

_TOKEN_CHARS = r"[A-Za-z0-9\-._~+/]"
#: Names whose value is a credential, in text such as ``api_key='...'`` or ``"token": "..."``.
_SECRET_KEY_NAMES = (
    r"api[-_]?key|x-api-key|apikey|secret|client[-_]secret|password|passwd|access[-_]token"
    r"|auth[-_]token|refresh[-_]token|token|key|authorization|proxy-authorization"
    r"|x-goog-api-key|cookie"
)

_URL_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://)[^\s/?#@\"'<>]+@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:key|api[-_]?key|apikey|access[-_]?token|token|secret|password|sig|signature"
    r"|x-goog-api-key)=)[^&\s#\"']+"
)
_AUTH_SCHEME = re.compile(
    rf"(?i:\b(bearer|basic|token)\s++)(?={_TOKEN_CHARS}{{0,256}}\d){_TOKEN_CHARS}{{7,}}[\w\-~+/]=*"
)
#: ``api_key='...'``, ``"token": "..."``, ``x-api-key: ...``: a quoted value goes whatever it
#: is; a bare one only when it looks like a key (8+ characters, a digit), not a word.
_PAIR = re.compile(
    rf"(?i)([\"']?(?<![A-Za-z0-9])(?:{_SECRET_KEY_NAMES})\b[\"']?\s*+[:=]\s*+)"
    rf"(?:([\"'])[^\"'\n]+\2|(?=[^\s\"',;}})\]]{{0,256}}\d)[^\s\"',;}})\]]{{8,}})"
)
_KEY_SHAPES = re.compile(
    r"(?<![\w\-])sk-[A-Za-z0-9_\-]{16,}"  # OpenAI sk-, sk-proj-, Anthropic sk-ant-, sk-or-
    r"|(?<![\w\-])AIza[0-9A-Za-z_\-]{35}"  # Google
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"  # GitHub
    r"|\b(?:hf|gsk|r8)_[A-Za-z0-9]{20,}"  # Hugging Face, Groq, Replicate
    r"|\b(?:xai|pplx)-[A-Za-z0-9]{20,}"  # xAI, Perplexity
    r"|(?<![\w\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWTs
)


def _mask_auth(match: re.Match[str]) -> str:
    return f"{match.group(1)} {MASK}"  # keep the scheme: "Bearer ***"


def _mask_pair(match: re.Match[str]) -> str:
    quote_mark = match.group(2) or ""
    return f"{match.group(1)}{quote_mark}{MASK}{quote_mark}"


def _redact_shapes(text: str) -> str:
    text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    text = _AUTH_SCHEME.sub(_mask_auth, text)
    text = _PAIR.sub(_mask_pair, text)
    return _KEY_SHAPES.sub(MASK, text)


def redact_known(text: str) -> str:
    """``text`` without the known secret values (not the shape rules: for user data)."""
    for secret in _known_values():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact(text: str) -> str:
    """``text`` with every credential replaced by :data:`MASK` (for errors, logs, exports).

    Cheap when there is nothing to hide: a substring test per known secret, then a few
    compiled patterns. Runs on failed items' errors, not on every success.
    """
    if not text:
        return text
    return _redact_shapes(redact_known(text))


def redact_url(url: str) -> str:
    """``url`` without userinfo (``https://***@host``) or secret query parameters."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = _QUERY_SECRET.sub(rf"\1{MASK}", f"?{parts.query}")[1:] if parts.query else ""
    rebuilt = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return redact(rebuilt)


# --- mappings --------------------------------------------------------------------------------

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SECRET_WORDS = frozenset(
    {
        "key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "pwd",
        "token",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
        "signature",
    }
)
#: Subtrees under these names are data (a JSON schema's property names), not settings.
_OPAQUE_PARTS = ("schema", "response_format")


def is_secret_name(name: str) -> bool:
    """True for a setting or header name that holds a credential: ``api_key``, ``x-api-key``,
    ``Authorization``, ``access_token``, ``clientSecret`` (not ``max_tokens``)."""
    return any(word.lower() in _SECRET_WORDS for word in _WORDS.findall(name))


def redact_mapping(obj: Any) -> Any:
    """A copy of ``obj`` (mappings, lists, scalars) fit to store or show.

    A string value under a secret name becomes :data:`MASK` (the key stays, so it shows that
    one was set); every other string is :func:`redact`-ed; JSON schemas keep their keys.
    """
    return _redact_value(obj, opaque=False)


def _redact_value(value: Any, *, opaque: bool) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        clean: dict[Any, Any] = {}
        for key, item in value.items():
            name = str(key)
            inner = opaque or any(part in name.lower() for part in _OPAQUE_PARTS)
            if not inner and is_secret_name(name) and isinstance(item, str | bytes) and item:
                clean[key] = MASK
            else:
                clean[key] = _redact_value(item, opaque=inner)
        return clean
    if isinstance(value, list | tuple):
        return [_redact_value(item, opaque=opaque) for item in value]
    return value


# --- logging ---------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message and traceback before any handler.

    Attach it to a handler (``handler.addFilter(RedactingFilter())``): a filter on a logger
    does not see records propagated from its children.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
