"""One line of counts under the progress bar; on narrow screens it also carries the
rate-limit summary (the rate-limits panel collapses into it)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from ..model import RunModel
from .rate_limits import limits_line


class CountsStrip(Horizontal):
    """``ok 1,200  failed 34  retries 56  busy 8/24`` and, when narrow, the limits."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple[object, ...] = ()
        self._counts = Static(id="counts")
        self._limits = Static(id="limits-inline")

    def compose(self) -> ComposeResult:
        yield self._counts
        yield self._limits

    def show(self, model: RunModel, now: float) -> None:
        """Redraw from the model (only what changed)."""
        state = model.state
        counts = Text.assemble(
            ("ok ", "dim"),
            (f"{state.succeeded:,}", "bold"),
            ("  failed ", "dim"),
            (f"{state.failed:,}", "bold"),
            ("  retries ", "dim"),
            (f"{state.retries:,}", "bold"),
            ("  busy ", "dim"),
            (state.busy_text(), "bold"),
            no_wrap=True,
            overflow="ellipsis",
        )
        limits = limits_line(state, now)
        key = (counts.plain, limits.plain)
        if key == self._shown:
            return
        # the counts are sized to their text: lay out again only when its length changes
        relayout = not self._shown or len(counts.plain) != len(str(self._shown[0]))
        self._shown = key
        self._counts.update(counts, layout=relayout)
        self._limits.update(limits, layout=False)
