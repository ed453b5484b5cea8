"""The JSON codec of the native transport's request and reply bodies.

stdlib ``json`` by default; ``ABL_JSON_CODEC=orjson`` switches to orjson when installed
(measured in ``benchmarks/provider_throughput.py``: see the module's choice below).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

__all__ = ["CODEC", "dumps", "loads"]


def _stdlib_dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _choose() -> tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]:
    wanted = os.environ.get("ABL_JSON_CODEC", "json").strip().lower()
    if wanted == "orjson":
        try:
            import orjson
        except ImportError:
            pass
        else:
            return "orjson", orjson.dumps, orjson.loads
    return "json", _stdlib_dumps, json.loads


CODEC, dumps, loads = _choose()
