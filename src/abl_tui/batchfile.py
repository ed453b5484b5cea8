"""Batch files: a JSONL items file, or a TOML spec with run settings that points at one.

Items are read as a stream (line by line, bounded memory) so a batch of any size can be
validated and run. Every problem is reported as a `BatchFileError` naming the file, line
and field, which the CLI prints (never a traceback) before exiting with status 2.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
import warnings
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from async_batch_llm.secrets import redact_url

MAX_LINE_BYTES = 32 * 1024 * 1024
"""Longest accepted JSONL line; caps the memory one line can take."""

_JSON_TYPES = {type(None): "null", bool: "boolean", str: "string", list: "array", dict: "object"}
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a table",
}
_SECRETS_MSG = (
    "API keys must not be stored in batch files; set the provider's environment variable "
    "instead (e.g. OPENAI_API_KEY or ANTHROPIC_API_KEY)"
)
_URL_SECRETS_MSG = (
    "credentials must not be stored in batch files: remove the user:password@ part "
    "(set the key in the provider's environment variable, e.g. OPENAI_API_KEY)"
)

MAX_CONTEXT_DEPTH = 64
"""Deepest nesting of an item's JSON ``context`` (the store and the JSON encoder recurse)."""

DEFAULT_MODEL = "simulated/demo"
"""The model of a batch that names none: accepted only for a dry run (nothing is sent)."""

#: Model prefixes whose provider has a batch API (``simulated/``: the simulator serves OpenAI's).
BATCH_API_PREFIXES = ("openai/", "anthropic/", "simulated/")

NO_MODEL_MSG = (
    "no model: give --model or `model = ...` in the TOML; "
    f"`{DEFAULT_MODEL}` runs the built-in simulator"
)

#: ``[completion_options]`` the strategy owns (mirrors LiteLLMStrategy's reserved keywords;
#: a test checks they agree), and why each is refused.
RESERVED_OPTIONS = {
    "messages": "the prompt comes from each item (and system_prompt)",
    "stream": "streaming is not supported",
    "timeout": "use the top-level `timeout` (seconds per attempt)",
    "request_timeout": "use the top-level `timeout` (seconds per attempt)",
    "max_retries": "use the top-level `max_attempts` (the engine retries)",
    "num_retries": "use the top-level `max_attempts` (the engine retries)",
}
#: ``[completion_options]`` that repeat a top-level setting (the strategy would get it twice).
_TOP_LEVEL_OPTIONS = ("model", "api_base", "system_prompt", "response_schema", "response_model")


class BatchFileError(Exception):
    """A problem in a batch file, located as precisely as possible (path, line, field)."""

    def __init__(
        self, path: Path | str, message: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        what = f"field '{self.field}': {self.message}" if self.field else self.message
        return f"{where}: {what}"


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _describe(err: Any) -> str:
    """Turn one pydantic error dict into a short human message."""
    kind = err["type"]
    if kind == "missing":
        return "missing (required)"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, got {_type_name(err['input'])}"
    ctx = err.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']:g}, got {err['input']!r}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']:g}, got {err['input']!r}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']:g}, got {err['input']!r}"
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {err['input']!r}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


class BatchItem(BaseModel):
    """One request of a batch. Unknown keys are ignored so files can carry extra data."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    id: str
    prompt: str
    context: Any = None

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class _DigestSet:
    """Set of 64-bit id digests in one flat array: ~16 bytes per id, where a set takes ~80.

    The digest is str's own (keyed SipHash) hash, free because str caches it. A digest
    match may be a collision, so callers confirm a duplicate before reporting it.
    """

    def __init__(self) -> None:
        self._slots = array("Q", bytes(8 * 1024))
        self._mask = 1023
        self._count = 0

    @staticmethod
    def digest(key: str) -> int:
        return (hash(key) & 0xFFFF_FFFF_FFFF_FFFF) or 1  # 0 marks an empty slot

    def add(self, key: str) -> bool:
        """Add key; False if its digest was already present (a duplicate, or a collision)."""
        h, slots, mask = self.digest(key), self._slots, self._mask
        i = h & mask
        while (v := slots[i]) != 0:
            if v == h:
                return False
            i = (i + 1) & mask
        slots[i] = h
        self._count += 1
        if self._count * 2 > mask:  # keep the load factor under 1/2
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = slots = array("Q", bytes(16 * len(old)))
        self._mask = mask = len(slots) - 1
        for h in old:
            if h:
                i = h & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = h


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BatchFileError(path, "file not found")
    if not path.is_file():
        raise BatchFileError(path, "not a file")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded text) for each non-blank line, one at a time."""
    _check_file(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise BatchFileError(path, f"cannot read: {exc.strerror or exc}") from None
    with fh:
        lineno = 0
        while raw := fh.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                limit = MAX_LINE_BYTES // (1024 * 1024)
                raise BatchFileError(path, f"line longer than {limit} MiB", line=lineno)
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # tolerate a UTF-8 byte-order mark
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                msg = f"invalid UTF-8 at byte offset {exc.start} of the line ({exc.reason})"
                raise BatchFileError(path, msg, line=lineno) from None
            if text.strip():
                yield lineno, text


def _too_deep(value: Any, limit: int) -> bool:
    """True if ``value`` nests lists/objects more than ``limit`` levels (no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"\s*:?|[\[\]{}]')


def _deep_key(text: str, limit: int) -> str | None:
    """The top-level key of a JSON object text under which it nests past ``limit`` levels."""
    depth, key = 0, None
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return key
        elif token in ("]", "}"):
            depth -= 1
        elif depth == 1 and token.endswith(":"):
            key = json.loads(token[:-1])
    return None


def _check_context_depth(path: Path, lineno: int, text: str, item: BatchItem) -> BatchItem:
    """Refuse a context nested deeper than MAX_CONTEXT_DEPTH (only lines with that many
    brackets can be: two ``str.count`` calls spare the walk for every other line)."""
    if text.count("[") + text.count("{") > MAX_CONTEXT_DEPTH:
        context = item.context
        if isinstance(context, dict | list) and _too_deep(context, MAX_CONTEXT_DEPTH):
            msg = f"nested deeper than {MAX_CONTEXT_DEPTH} levels"
            raise BatchFileError(path, msg, line=lineno, field="context")
    return item


def _parse_item(path: Path, lineno: int, text: str) -> BatchItem:
    try:  # fast path: pydantic parses and validates in one go
        item = BatchItem.model_validate_json(text)
    except ValidationError:
        pass  # redo it slowly to explain the problem (or accept what json.loads accepts)
    else:
        if text.count("[") + text.count("{") <= MAX_CONTEXT_DEPTH:
            return item  # too few brackets to be too deep (nearly every line)
        return _check_context_depth(path, lineno, text, item)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"invalid JSON: {exc.msg} (column {exc.colno})"
        raise BatchFileError(path, msg, line=lineno) from None
    except RecursionError:  # far too deep for json.loads: find the key by scanning the text
        field = "context" if _deep_key(text, MAX_CONTEXT_DEPTH + 1) == "context" else None
        msg = f"nested deeper than {MAX_CONTEXT_DEPTH} levels"
        raise BatchFileError(path, msg, line=lineno, field=field) from None
    if not isinstance(data, dict):
        msg = f"expected a JSON object, got {_type_name(data)}"
        raise BatchFileError(path, msg, line=lineno)
    if _too_deep(data, MAX_CONTEXT_DEPTH + 1):  # before json.dumps below recurses into it
        context = data.get("context")
        deep_context = isinstance(context, dict | list) and _too_deep(context, MAX_CONTEXT_DEPTH)
        msg = f"nested deeper than {MAX_CONTEXT_DEPTH} levels"
        raise BatchFileError(path, msg, line=lineno, field="context" if deep_context else None)
    try:  # json.loads accepts "\ud800"; such text cannot be stored or sent later
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        msg = "invalid \\u escape: unpaired surrogate (not a Unicode character)"
        raise BatchFileError(path, msg, line=lineno) from None
    try:
        item = BatchItem.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]  # report the first field that is wrong (id before prompt)
        field = ".".join(str(p) for p in err["loc"]) or None
        raise BatchFileError(path, _describe(err), line=lineno, field=field) from None
    return _check_context_depth(path, lineno, text, item)


def _first_line_of(path: Path, item_id: str, before: int) -> int | None:
    """Rescan for the first line holding item_id; only runs when a duplicate is suspected."""
    for lineno, text in _lines(path):
        if lineno >= before:
            break
        if json.loads(text).get("id") == item_id:  # lines before `before` are valid objects
            return lineno
    return None


def iter_items(path: Path | str) -> Iterator[BatchItem]:
    """Stream validated items from a JSONL file; raises BatchFileError at the first problem.

    Memory stays bounded: one line at a time plus an 8-byte digest per id for duplicate
    detection. An empty file (no items) is an error, raised once the file is exhausted.
    """
    path = Path(path)
    seen = _DigestSet()
    count = 0
    for lineno, text in _lines(path):
        item = _parse_item(path, lineno, text)
        if not seen.add(item.id):
            first = _first_line_of(path, item.id, lineno)
            if first is not None:  # otherwise a digest collision, not a duplicate
                msg = f"duplicate id {item.id!r} (first seen on line {first})"
                raise BatchFileError(path, msg, line=lineno, field="id")
        count += 1
        yield item
    if count == 0:
        raise BatchFileError(path, "no items (the file is empty)")


def validate_file(path: Path | str) -> int:
    """Check every line of a JSONL items file and return the number of items."""
    return sum(1 for _ in iter_items(path))


class BatchSpec(BaseModel):
    """Run settings from a TOML spec; unknown keys are errors so typos never pass silently.

    Every value is checked here, before a run is created: URLs, simulator profiles, JSON
    schemas and completion options the strategy would refuse later are refused now.
    """

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    name: str | None = None
    items: str
    model: str = DEFAULT_MODEL
    api_base: str | None = None
    transport: Literal["auto", "native", "litellm"] = "auto"
    workers: int = Field(default=8, ge=1, le=10_000)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    timeout: float = Field(default=60.0, gt=0)
    system_prompt: str | None = None
    temperature: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    completion_options: dict[str, Any] = Field(default_factory=dict)
    response_schema: dict[str, Any] | None = None
    response_schema_file: str | None = None
    dry_run: bool = False
    #: Bill the calls at this priced model's rates ("openai/gpt-4o-mini"): for a server whose
    #: model name the price table does not know (a proxy, a local server, the simulator).
    price_as: str | None = None
    #: Stop dispatch once the run's cost so far plus the calls under way reaches this (USD).
    max_cost: float | None = Field(default=None, gt=0)
    #: Send the items through the provider's batch API (OpenAI Batches, Anthropic Message
    #: Batches): half the price, answers within the provider's window (24 h) instead of now.
    batch_api: bool = False
    #: Seconds after a batch's submission past which it is cancelled (what it had not done is
    #: rescued); None: the provider's own window.
    batch_deadline: float | None = Field(default=None, gt=0)
    #: What becomes of items a batch could not finish (retryable errors, expired, cancelled):
    #: sent online through the normal engine, or left failed.
    rescue: Literal["online", "none"] = "online"
    #: Most requests per provider batch (default: the provider's limit); smaller batches end,
    #: and give their answers, sooner.
    batch_size: int | None = Field(default=None, ge=1)
    #: The largest answer accepted, in MiB: a larger one fails its item (not retried,
    #: ``response_too_large``) instead of being held in memory and stored.
    max_response_mb: float = Field(default=8.0, gt=0)

    #: Where these settings came from (the batch file), for messages; not a setting.
    _source: str | None = PrivateAttr(default=None)

    @field_validator("model", "items")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("model")
    @classmethod
    def _known_simulator_profile(cls, value: str) -> str:
        if value.startswith("simulated/"):
            from async_batch_llm.providers._simulated import simulated_profile

            simulated_profile(value)  # ValueError naming the known profiles
        return value

    @field_validator("price_as")
    @classmethod
    def _priced_model(cls, value: str | None) -> str | None:
        if value is not None:
            from .costs import price_of

            if price_of(value) is None:
                raise ValueError(
                    f"{value!r} is not in the price table: name a priced model as "
                    "provider/name, e.g. openai/gpt-4o-mini"
                )
        return value

    @model_validator(mode="after")
    def _batch_api_provider(self) -> BatchSpec:
        if self.batch_api and not self.model.startswith(BATCH_API_PREFIXES):
            raise ValueError(
                f"batch_api: {self.model!r} has no batch API; only openai/, anthropic/ and "
                "simulated/ models can go through one (OpenAI Batches, Anthropic Message "
                "Batches)"
            )
        return self

    @field_validator("api_base")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_api_base(value)

    @field_validator("response_schema")
    @classmethod
    def _valid_json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_json_schema(value)
        return value

    def __eq__(self, other: object) -> bool:
        """Equal settings are equal wherever they came from."""
        if not isinstance(other, BatchSpec):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # mutable settings: unhashable, as pydantic's

    @property
    def model_given(self) -> bool:
        """True when a model was named (in the file or an override), not just defaulted."""
        return "model" in self.model_fields_set

    def merged(self, **overrides: Any) -> BatchSpec:
        """Return a validated copy with the non-None overrides (e.g. CLI flags) applied.

        This is the last step before a run: a batch that names no model anywhere is refused
        (``BatchFileError``) unless it is a dry run, which uses the simulator and sends nothing.
        """
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"unknown BatchSpec field(s): {', '.join(unknown)}")
        # A defaulted model stays "not given" through the merge, so the check below sees it.
        data = self.model_dump(exclude=None if self.model_given else {"model"})
        data.update({k: v for k, v in overrides.items() if v is not None})
        merged = _validate_spec("command-line options", data, text="")
        merged._source = self._source
        if not merged.model_given and not merged.dry_run:
            raise BatchFileError(self._source or "command-line options", NO_MODEL_MSG)
        return merged


def check_api_base(value: str) -> str:
    """``value`` if it is an absolute http(s) URL with a host; else ValueError saying why."""
    shown = redact_url(value)  # the message must not echo credentials
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc}): {shown!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an absolute http:// or https:// URL with a host, got {shown!r}")
    if value != value.strip() or any(ch.isspace() for ch in parts.netloc):
        raise ValueError(f"must not contain spaces, got {shown!r}")
    if "@" in parts.netloc:  # a run's settings are stored: a password in the URL would be too
        raise ValueError(
            f"must not carry credentials (user:password@), got {shown!r}: set the key in the "
            "provider's environment variable instead (e.g. OPENAI_API_KEY)"
        )
    return value


def check_json_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError unless ``schema`` is a valid JSON schema (for its ``$schema`` draft)."""
    import jsonschema  # type: ignore[import-untyped]  # ~45 ms: only for structured output

    with warnings.catch_warnings():  # an unknown $schema warns, then falls back to 2020-12
        warnings.simplefilter("ignore", DeprecationWarning)
        validator = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator
        )
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "the top level"
        detail = exc.message if len(exc.message) <= 160 else exc.message[:157] + "..."
        raise ValueError(f"not a valid JSON schema: {detail} (at {where})") from None
    except RecursionError:
        raise ValueError("not a valid JSON schema: nested too deeply") from None


@dataclass(frozen=True)
class LoadedBatch:
    """A batch ready to run: its settings and the resolved path of its items file."""

    spec: BatchSpec
    items_path: Path
    spec_path: Path | None = None


def _key_line(text: str, key: str) -> int | None:
    """Best-effort line of a top-level TOML key or table (tomllib reports no positions)."""
    quoted = rf"""(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')"""
    assign, header = re.compile(rf"^\s*{quoted}\s*[.=]"), re.compile(rf"^\s*\[+\s*{quoted}\s*[.\]]")
    in_table = False
    for n, line in enumerate(text.splitlines(), 1):
        if header.match(line):
            return n
        in_table = in_table or line.lstrip().startswith("[")
        if not in_table and assign.match(line):
            return n
    return None


def _check_keys(path: Path | str, data: dict[str, Any], text: str) -> None:
    """Refuse unknown keys (with a hint) and keys that would store a secret in the file."""
    known = BatchSpec.model_fields
    for key in data:
        if key == "api_key":
            raise BatchFileError(path, _SECRETS_MSG, line=_key_line(text, key), field=key)
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            msg = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            raise BatchFileError(path, msg, line=_key_line(text, key))
    api_base = data.get("api_base")
    if text and isinstance(api_base, str) and "@" in api_base:  # only a file is refused
        try:
            has_userinfo = "@" in urlsplit(api_base).netloc
        except ValueError:
            has_userinfo = False  # the URL check names what is wrong
        if has_userinfo:
            line = _key_line(text, "api_base")
            raise BatchFileError(path, _URL_SECRETS_MSG, line=line, field="api_base")


def _check_options(path: Path | str, data: dict[str, Any], text: str) -> None:
    """Refuse completion options the strategy owns or that repeat a top-level setting."""
    options = data.get("completion_options")
    if not isinstance(options, dict):
        return  # the type check names it
    line = _key_line(text, "completion_options")
    for key in options:
        field = f"completion_options.{key}"
        if key == "api_key":
            raise BatchFileError(path, _SECRETS_MSG, line=line, field=field)
        if key in RESERVED_OPTIONS:
            msg = f"set by abl, not a completion option: {RESERVED_OPTIONS[key]}"
            raise BatchFileError(path, msg, line=line, field=field)
        if key in _TOP_LEVEL_OPTIONS:
            msg = f"use the top-level `{key}` setting instead"
            raise BatchFileError(path, msg, line=line, field=field)
    if "response_format" in options and data.get("response_schema") is not None:
        msg = "give either response_schema or completion_options.response_format, not both"
        raise BatchFileError(path, msg, line=line, field="completion_options.response_format")


def _validate_spec(path: Path | str, data: dict[str, Any], text: str) -> BatchSpec:
    _check_keys(path, data, text)
    _check_options(path, data, text)
    try:
        return BatchSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        line = _key_line(text, str(err["loc"][0])) if err["loc"] else None
        field = ".".join(str(p) for p in err["loc"]) or None
        raise BatchFileError(path, _describe(err), line=line, field=field) from None


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _load_schema_file(spec_path: Path, schema_path: Path) -> dict[str, Any]:
    field = "response_schema_file"
    try:
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BatchFileError(spec_path, f"file not found: {schema_path}", field=field) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BatchFileError(spec_path, f"cannot load {schema_path}: {exc}", field=field) from None
    if not isinstance(schema, dict):
        msg = f"{schema_path} must hold a JSON object, got {_type_name(schema)}"
        raise BatchFileError(spec_path, msg, field=field)
    try:
        check_json_schema(schema)
    except ValueError as exc:
        raise BatchFileError(spec_path, f"{schema_path}: {exc}", field=field) from None
    return schema


def load_spec(path: Path) -> LoadedBatch:
    """Read a TOML spec; resolve its items path (and schema file) against the spec's folder."""
    _check_file(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is tolerated
        data = tomllib.loads(text)
    except OSError as exc:
        raise BatchFileError(path, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BatchFileError(path, f"invalid UTF-8 at byte offset {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)", str(exc))
        if found is None:
            raise BatchFileError(path, f"invalid TOML: {exc}") from None
        msg = f"invalid TOML: {str(exc)[: found.start()]} (column {found.group(2)})"
        raise BatchFileError(path, msg, line=int(found.group(1))) from None
    spec = _validate_spec(path, data, text)
    base = path.parent
    items_path = _resolve(base, spec.items)
    if not items_path.is_file():
        msg = f"{'not a file' if items_path.exists() else 'file not found'}: {items_path}"
        raise BatchFileError(path, msg, line=_key_line(text, "items"), field="items")
    updates: dict[str, Any] = {"items": str(items_path)}
    if spec.response_schema_file is not None:
        if spec.response_schema is not None:
            msg = "give either response_schema or response_schema_file, not both"
            raise BatchFileError(path, msg, field="response_schema_file")
        schema_path = _resolve(base, spec.response_schema_file)
        updates["response_schema_file"] = str(schema_path)
        updates["response_schema"] = _load_schema_file(path, schema_path)
        if "response_format" in spec.completion_options:
            msg = "give either response_schema_file or completion_options.response_format"
            raise BatchFileError(path, msg, field="response_schema_file")
    loaded = spec.model_copy(update=updates)
    loaded._source = str(path)
    return LoadedBatch(spec=loaded, items_path=items_path, spec_path=path)


def load_batch(path: Path | str) -> LoadedBatch:
    """Load a batch: a `.toml` spec, or (any other suffix) a JSONL items file with defaults.

    Items are not read here; stream them with `iter_items(batch.items_path)`.
    """
    path = Path(path)
    if path.suffix.lower() == ".toml":
        return load_spec(path)
    _check_file(path)
    spec = BatchSpec(items=str(path), name=path.stem)
    spec._source = str(path)
    return LoadedBatch(spec=spec, items_path=path)
