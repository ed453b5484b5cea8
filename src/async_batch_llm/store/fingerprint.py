"""The fingerprint of a batch's items file (size and SHA-256), recorded when a run starts.

A run killed while its items were being stored finishes storing them from the file on
resume, skipping the items already stored. That is right only if the file is the one the
run began with: an edited file would silently lose or shift items. So the run records the
file's fingerprint first, and the resume compares it before reading on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_fingerprint(path: Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of the file (read once, in 1 MiB pieces)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def fingerprint_change(path: Path, recorded: Any) -> str | None:
    """How ``path`` differs from its ``recorded`` fingerprint, or None if it is the same (or
    nothing was recorded: a run from an older version)."""
    if not isinstance(recorded, dict) or "sha256" not in recorded:
        return None
    now = file_fingerprint(path)
    if now == {"size": recorded.get("size"), "sha256": recorded["sha256"]}:
        return None
    if now["size"] != recorded.get("size"):
        return f"its size went from {recorded.get('size')} to {now['size']} bytes"
    return "its content changed (same size, different SHA-256)"
