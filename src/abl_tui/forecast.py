"""Before a paid run starts: what it will cost and how long it will take, roughly.

Tokens are counted the cheap way (~4 characters a token) from the prompts and the system
prompt; output is ``max_tokens`` an item when the batch sets it, else an assumed
:data:`OUTPUT_TOKENS_GUESS`. Prices come from the engine's price table (litellm's bundled
map, read as data). Time follows the tightest known limit: workers at a typical
:data:`SECONDS_PER_CALL`, ``rpm``, ``tpm``. The result is a range, not a promise.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .batchfile import BatchSpec, iter_items
from .costs import batch_price_of, price_of

#: Characters per token (English prose; the provider's tokenizer decides the real count).
CHARS_PER_TOKEN = 4
#: Tokens a chat message adds around its text (role, separators).
MESSAGE_OVERHEAD_TOKENS = 4
#: Output tokens an item is assumed to use when the batch sets no ``max_tokens``.
OUTPUT_TOKENS_GUESS = 200
#: Seconds a call is assumed to take, for the time a worker-bound run needs.
SECONDS_PER_CALL = 1.5
#: The providers' batch window (OpenAI's 24 h; Anthropic ends most batches sooner).
BATCH_WINDOW = 24 * 3600.0
#: How far off the forecast may be, shown as "+/- 15%".
MARGIN = 0.15


@dataclass(frozen=True, slots=True)
class Forecast:
    """A run's expected size, cost (None: the model is not priced) and duration."""

    items: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    seconds: float
    bound_by: str  # what limits the speed: "workers", "rpm" or "tpm"
    output_assumed: bool  # True when no max_tokens was set (the output is a guess)
    priced_as: str

    def question(self) -> str:
        """``Start? ~$4.10 (+/- 15%), ~25 min``."""
        cost = "cost unknown" if self.cost is None else f"~{_money(self.cost)}"
        margin = "" if self.cost is None else f" (+/- {MARGIN:.0%})"
        return f"Start? {cost}{margin}, ~{_minutes(self.seconds)}"

    def detail(self) -> str:
        """Where the numbers come from, in two lines."""
        output = (
            f"~{OUTPUT_TOKENS_GUESS} output tokens an item assumed (set max_tokens to bound it)"
            if self.output_assumed
            else "output up to max_tokens an item"
        )
        price = (
            f"at {self.priced_as}'s prices"
            if self.cost is not None
            else f"{self.priced_as} is not in the price table"
        )
        return (
            f"{self.items:,} items, ~{self.input_tokens:,} input and ~{self.output_tokens:,} "
            f"output tokens ({output}), {price};\n"
            f"time bound by {self.bound_by}"
        )


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.995 else f"${value:.3f}"


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{max(round(seconds), 1)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def needs_confirmation(settings: BatchSpec) -> bool:
    """True for a run that may cost money: not a dry run, not the simulator, and either billed
    by the batch's own word (``price_as``), or a priced model or hosted provider not served
    on this machine or the local network (vLLM, llama.cpp: nobody bills those calls,
    whatever the model is called)."""
    if settings.dry_run or settings.model.startswith("simulated/"):
        return False
    if settings.price_as:
        return True
    if settings.api_base is not None and _is_local(settings.api_base):
        return False
    return settings.api_base is None or price_of(settings.model) is not None


def _is_local(api_base: str) -> bool:
    """True when ``api_base`` names this machine or a private-network address."""
    host = (urlsplit(api_base).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def forecast(settings: BatchSpec, items_path: Path) -> Forecast:
    """Read the items once and work out the forecast."""
    system = len(settings.system_prompt or "")
    items = chars = 0
    for item in iter_items(items_path):
        items += 1
        chars += len(item.prompt) + system
    overhead = MESSAGE_OVERHEAD_TOKENS * (2 if system else 1)
    input_tokens = chars // CHARS_PER_TOKEN + items * overhead
    per_item_out = settings.max_tokens or OUTPUT_TOKENS_GUESS
    output_tokens = items * per_item_out
    priced_as = settings.price_as or settings.model
    price = batch_price_of(priced_as) if settings.batch_api else price_of(priced_as)
    if settings.batch_api:
        priced_as += " batch"
    cost = None
    if price is not None and items:
        cost = price.cost(input_tokens // items, per_item_out) * items
    per_second = {"workers": settings.workers / SECONDS_PER_CALL}
    if settings.rpm:
        per_second["rpm"] = settings.rpm / 60
    if settings.tpm and items:
        per_second["tpm"] = settings.tpm / 60 / ((input_tokens + output_tokens) / items)
    bound_by = min(per_second, key=lambda name: per_second[name])
    seconds = items / per_second[bound_by] if items else 0.0
    if settings.batch_api:  # the provider answers within its window, or our deadline
        bound_by, seconds = "the provider's batch window", settings.batch_deadline or BATCH_WINDOW
    return Forecast(
        items,
        input_tokens,
        output_tokens,
        cost,
        seconds,
        bound_by,
        settings.max_tokens is None,
        priced_as,
    )
