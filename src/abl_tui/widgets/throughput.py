"""Throughput: items/s and tokens/s now, each with a sparkline of the last minute."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from .. import formatting as fmt
from ..state import RunState

#: Seconds of history the sparklines show.
SPARK_SECONDS = 60


def _label(name: str, value: str) -> Text:
    return Text.assemble((f"{name} ", "dim"), (value, "bold"), no_wrap=True, overflow="ellipsis")


class ThroughputPanel(Vertical):
    """Two rates with their recent past; the sparklines share the panel's width."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Throughput"
        self._shown: tuple[object, ...] = ()
        self._items_rate = Static(id="items-rate")
        self._items_spark = Sparkline([], id="items-spark")
        self._tokens_rate = Static(id="tokens-rate")
        self._tokens_spark = Sparkline([], id="tokens-spark")

    def compose(self) -> ComposeResult:
        yield self._items_rate
        yield self._items_spark
        yield self._tokens_rate
        yield self._tokens_spark

    def show(self, state: RunState, now: float) -> None:
        """Redraw from the state (only what changed)."""
        # once the run has ended, the lines stop at its end and the rates are its average
        at = now if state.finished_at is None else min(now, state.finished_at)
        items = state.completions.series(at, SPARK_SECONDS)
        tokens = state.tokens.series(at, SPARK_SECONDS)
        suffix = "" if state.finished_at is None else " avg"
        items_rate = fmt.rate(state.items_per_second(now)) + suffix
        tokens_rate = fmt.rate(state.tokens_per_second(now)) + suffix
        key = (items_rate, tokens_rate, items, tokens)
        if key == self._shown:
            return
        self._shown = key
        # one-line labels of a fixed-size panel: no layout pass needed
        self._items_rate.update(_label("items", items_rate), layout=False)
        self._tokens_rate.update(_label("tokens", tokens_rate), layout=False)
        self._items_spark.data = items
        self._tokens_spark.data = tokens
