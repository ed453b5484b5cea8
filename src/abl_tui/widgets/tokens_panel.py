"""Tokens and cost: input, output, cached, the cache-hit gauge, cost so far and projected."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from .. import formatting as fmt
from ..state import RunState
from .gauge import Gauge


def budget_text(state: RunState) -> Text:
    """``limit $0.0500 (39%)``, ``limit $0.0500 reached`` while it holds dispatch back, or
    ``no cost limit``."""
    line = Text(no_wrap=True, overflow="ellipsis")
    if state.max_cost is None:
        line.append("no cost limit", "dim")
        return line
    line.append("limit ", "dim")
    line.append(fmt.cost(state.max_cost), "bold")
    if state.budget_note:
        line.append(" reached", "bold reverse")
    elif state.totals.cost_known:
        line.append(f" ({state.totals.cost / state.max_cost:.0%})", "dim")
    return line


class TokensPanel(Vertical):
    """Token totals and cost; a cost the model map does not know reads ``unknown``."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Tokens & cost"
        self._shown: tuple[object, ...] = ()
        self._counts = Static(id="token-counts")
        self._cached = Static(id="cached")
        self._gauge = Gauge(id="cache-gauge")
        self._cost = Static(id="cost")
        self._budget = Static(id="budget")

    def compose(self) -> ComposeResult:
        yield self._counts
        yield self._cached
        yield self._gauge
        yield self._cost
        yield self._budget

    def show(self, state: RunState, now: float) -> None:
        """Redraw from the state (only what changed)."""
        totals = state.totals
        counts = Text.assemble(
            ("in ", "dim"),
            (fmt.count(totals.input_tokens), "bold"),
            ("  out ", "dim"),
            (fmt.count(totals.output_tokens), "bold"),
            no_wrap=True,
            overflow="ellipsis",
        )
        cached = Text.assemble(
            ("cached ", "dim"),
            (fmt.count(totals.cached_tokens), "bold"),
            (" · hit rate", "dim"),
            no_wrap=True,
            overflow="ellipsis",
        )
        so_far = fmt.cost(totals.cost if totals.cost_known else None)
        projected = fmt.cost(state.projected_cost())
        cost = Text.assemble(
            ("cost ", "dim"),
            (so_far, "bold"),
            ("  → ", "dim"),
            (projected, "bold"),
            no_wrap=True,
            overflow="ellipsis",
        )
        budget = budget_text(state)
        key = (
            counts.plain,
            cached.plain,
            cost.plain,
            budget.plain,
            round(totals.cache_hit_rate, 4),
        )
        if key == self._shown:
            return
        self._shown = key
        # one-line texts of a fixed-size panel: no layout pass needed
        self._counts.update(counts, layout=False)
        self._cached.update(cached, layout=False)
        self._cost.update(cost, layout=False)
        self._budget.update(budget, layout=False)
        self._gauge.share = totals.cache_hit_rate
