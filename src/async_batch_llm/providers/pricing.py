"""Call costs from litellm's bundled price table, read as data (litellm itself is not imported).

The table is ``model_prices_and_context_window_backup.json`` inside the installed litellm
package, found with :func:`importlib.util.find_spec` (which does not run the package). Costs
follow litellm's ``generic_cost_per_token`` for the cases chat models use: input, output,
cache reads and writes (an absent cache rate bills as input), and the
``*_above_<N>k_tokens`` long-context rates. A model the table does not price, or prices
by rules this module does not follow (tiered or off-peak pricing), costs None: unknown,
never a made-up 0.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelPrice", "load_price_table", "model_price"]

_TABLE_FILE = "model_prices_and_context_window_backup.json"
_FIREWORKS_CACHE_READ_RATIO = 0.5  # litellm's default for fireworks_ai models without one
_INCLUSIVE_THRESHOLD_PROVIDERS = frozenset({"xai"})
_UNSUPPORTED_KEYS = ("tiered_pricing", "off_peak_pricing")
_RATE_KEYS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
)

_lock = threading.Lock()
_table: dict[str, Any] | None = None


def load_price_table() -> dict[str, Any]:
    """litellm's bundled price table (read once per process; {} when litellm is absent)."""
    global _table
    if _table is not None:
        return _table
    with _lock:
        if _table is None:
            _table = _read_table()
    return _table


def _read_table() -> dict[str, Any]:
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return {}
    locations = list(spec.submodule_search_locations or ()) if spec else []
    for folder in locations:
        path = Path(folder) / _TABLE_FILE
        if path.is_file():
            with path.open("rb") as handle:
                table = json.load(handle)
            return table if isinstance(table, dict) else {}
    return {}


def _rate(entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _threshold_tokens(key: str) -> float:
    text = key.rsplit("_above_", 1)[1].split("_tokens", 1)[0]
    return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


@dataclass(frozen=True, slots=True)
class _Rates:
    input: float
    output: float
    cache_read: float
    cache_creation: float


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """The per-token rates of one model, with its long-context tiers."""

    base: _Rates
    tiers: tuple[tuple[float, _Rates], ...]
    """``(threshold, rates)`` by rising threshold: prompts above it use these rates."""
    inclusive: bool

    def cost(
        self, prompt: int, completion: int, cache_read: int = 0, cache_write: int = 0
    ) -> float:
        """USD for one call; ``prompt`` counts every input token, cached ones included."""
        rates = self.base
        for threshold, tier in self.tiers:
            if prompt > threshold or (self.inclusive and prompt >= threshold):
                rates = tier
        uncached = max(prompt - cache_read - cache_write, 0)
        return (
            uncached * rates.input
            + cache_read * rates.cache_read
            + cache_write * rates.cache_creation
            + completion * rates.output
        )


def _raw_rates(
    entry: Mapping[str, Any], suffix: str, fallback: tuple[float | None, ...] | None
) -> tuple[float | None, ...]:
    """The four rates under ``suffix`` as written (None: absent), else ``fallback``'s."""
    values = []
    for index, key in enumerate(_RATE_KEYS):
        value = _rate(entry, key + suffix)
        values.append(fallback[index] if value is None and fallback is not None else value)
    return tuple(values)


def _resolved(raw: tuple[float | None, ...]) -> _Rates:
    """Rates with an absent cache read or write billed as input, as litellm does."""
    input_rate, output_rate, read, write = raw
    input_rate = input_rate or 0.0
    return _Rates(
        input_rate,
        output_rate or 0.0,
        input_rate if read is None else read,
        input_rate if write is None else write,
    )


def _price_of(entry: Mapping[str, Any], provider: str) -> ModelPrice | None:
    if (
        _rate(entry, "input_cost_per_token") is None
        and _rate(entry, "output_cost_per_token") is None
    ):
        return None
    if any(entry.get(key) is not None for key in _UNSUPPORTED_KEYS):
        return None
    if provider == "fireworks_ai" and entry.get("cache_read_input_token_cost") is None:
        base_input = _rate(entry, "input_cost_per_token")
        if base_input is not None:
            entry = {
                **entry,
                "cache_read_input_token_cost": base_input * _FIREWORKS_CACHE_READ_RATIO,
            }
    base = _raw_rates(entry, "", None)
    thresholds = sorted(
        {
            _threshold_tokens(key)
            for key in entry
            if key.startswith(tuple(f"{p}_above_" for p in _RATE_KEYS))
            and key.endswith("k_tokens")
            and "hr" not in key
        }
    )
    tiers = []
    for threshold in thresholds:
        label = f"{int(threshold // 1000)}k" if threshold % 1000 == 0 else str(int(threshold))
        tiers.append((threshold, _resolved(_raw_rates(entry, f"_above_{label}_tokens", base))))
    return ModelPrice(_resolved(base), tuple(tiers), provider in _INCLUSIVE_THRESHOLD_PROVIDERS)


def model_price(provider: str, name: str) -> ModelPrice | None:
    """The price of ``provider/name`` as litellm would look it up; None when not priced."""
    table = load_price_table()
    for key in (f"{provider}/{name}", name):
        entry = table.get(key)
        if not isinstance(entry, dict):
            continue
        owner = entry.get("litellm_provider")
        if owner is not None and owner != provider and not str(owner).startswith(provider):
            continue
        return _price_of(entry, provider)
    return None
