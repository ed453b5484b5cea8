"""Exporting a run's items as JSON Lines or CSV, one line per item, streamed in input order."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterable
from typing import Any, TextIO

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
        "error": item.error,
        "error_category": item.error_category,
        "attempts": item.attempts,
        "input_tokens": item.input_tokens,
        "output_tokens": item.output_tokens,
        "cached_input_tokens": item.cached_tokens,
        "cost": item.cost,
        "context": item.context,
    }


def _csv_row(item: ItemRecord) -> list[Any]:
    """One item as a CSV row: text as it is, structured output and context as JSON text."""
    return [
        item.item_id,
        item.status,
        "true" if item.status == "succeeded" else "false",
        item.output,
        item.error,
        item.error_category,
        item.attempts,
        item.input_tokens,
        item.output_tokens,
        item.cached_tokens,
        item.cost,
        to_json(item.context),
    ]


async def export_items(items: AsyncIterable[ItemRecord], fmt: str, out: TextIO) -> int:
    """Write ``items`` to ``out`` in ``fmt`` (``jsonl`` or ``csv``); return how many."""
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    count = 0
    if fmt == "jsonl":
        dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode
        async for item in items:
            out.write(dumps(export_record(item)) + "\n")
            count += 1
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        async for item in items:
            writer.writerow(_csv_row(item))
            count += 1
    out.flush()
    return count
