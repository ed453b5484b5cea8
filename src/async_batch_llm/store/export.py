"""Exporting a run's items as JSON Lines or CSV, one line per item, streamed in input order.

What leaves the store is cleaned on the way out: error texts are redacted (keys echoed by a
provider), every field loses the secrets this process knows, CSV cells cannot start a
spreadsheet formula, and :func:`open_export_file` creates the file readable by its owner only.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any, TextIO

from ..secrets import redact, redact_known
from .encode import to_json
from .errors import StoreError
from .records import ItemRecord

FORMATS = ("jsonl", "csv")

#: The columns of both formats, in order.
FIELDS = (
    "id",
    "status",
    "success",
    "output",
    "error",
    "error_category",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost",
    "context",
)


def export_record(item: ItemRecord) -> dict[str, Any]:
    """One item as an export record (structured outputs as values, not JSON text)."""
    return {
        "id": item.item_id,
        "status": item.status,
        "success": item.status == "succeeded",
        "output": item.output_value,
        "error": redact(item.error) if item.error else item.error,
        "error_category": item.error_category,
        "attempts": item.attempts,
        "input_tokens": item.input_tokens,
        "output_tokens": item.output_tokens,
        "cached_input_tokens": item.cached_tokens,
        "cost": item.cost,
        "context": item.context,
    }


#: What a spreadsheet reads as the start of a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: ... except a plain number, which stays a number ("-0.5", "+3", "1e-9").
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def csv_safe(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs: a leading ``= + - @``, tab or CR gets a
    single quote in front (OWASP's advice); plain numbers are left as they are."""
    if text.startswith(_FORMULA_START) and _PLAIN_NUMBER.fullmatch(text) is None:
        return "'" + text
    return text


def _cell(value: Any) -> Any:
    return csv_safe(redact_known(value)) if isinstance(value, str) else value


def _csv_row(item: ItemRecord) -> list[Any]:
    """One item as a CSV row: text as it is, structured output and context as JSON text."""
    row = [
        item.item_id,
        item.status,
        "true" if item.status == "succeeded" else "false",
        item.output,
        redact(item.error) if item.error else item.error,
        item.error_category,
        item.attempts,
        item.input_tokens,
        item.output_tokens,
        item.cached_tokens,
        item.cost,
        to_json(item.context),
    ]
    return [_cell(value) for value in row]


async def export_items(items: AsyncIterable[ItemRecord], fmt: str, out: TextIO) -> int:
    """Write ``items`` to ``out`` in ``fmt`` (``jsonl`` or ``csv``); return how many."""
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    count = 0
    if fmt == "jsonl":
        dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode
        async for item in items:
            out.write(redact_known(dumps(export_record(item))) + "\n")
            count += 1
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        async for item in items:
            writer.writerow(_csv_row(item))
            count += 1
    out.flush()
    return count


def open_export_file(path: Path | str) -> TextIO:
    """Open ``path`` to write an export: created ``0600`` (owner only), truncated if it exists.

    An existing regular file readable by others is narrowed to ``0600`` too (an export holds
    prompts and answers); devices and pipes (``/dev/stdout``) are left as they are.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
            os.fchmod(fd, 0o600)
        return open(fd, "w", encoding="utf-8", newline="")  # the caller closes it
    except BaseException:
        os.close(fd)
        raise
