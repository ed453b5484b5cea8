"""Workers: each busy one with its item, attempt and time on it; idle ones summed up."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.widgets import Static

from .. import formatting as fmt
from ..state import RunState

#: Widths of the fixed columns: worker id, attempt, time on the attempt (item takes the rest).
_ID, _TRY, _FOR = 3, 3, 6
#: Idle worker ids listed by name up to this many (then just counted).
_IDLE_NAMED = 8


def workers_text(state: RunState, now: float, width: int) -> Text:
    """Plain fixed-width lines (cheaper to redraw many times a second than a Rich table)."""
    item_width = max(width - _ID - _TRY - _FOR - 3, 4)
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{'w':>{_ID}} {'item':<{item_width}} {'try':>{_TRY}} {'for':>{_FOR}}", "dim")
    idle: list[int] = []
    for worker_id in sorted(state.workers):
        worker = state.workers[worker_id]
        if not worker.busy:
            idle.append(worker_id)
            continue
        item = str(worker.item_id)
        if len(item) > item_width:
            item = item[: item_width - 1] + "…"
        took = fmt.duration(max(now - worker.since, 0.0))
        text.append(f"\n{worker_id:>{_ID}} ", "dim")
        text.append(f"{item:<{item_width}} {worker.attempt:>{_TRY}} {took:>{_FOR}}")
    if idle:
        named = " ".join(str(worker_id) for worker_id in idle[:_IDLE_NAMED])
        more = "…" if len(idle) > _IDLE_NAMED else ""
        text.append(f"\n{'':>{_ID}} {len(idle)} idle: {named}{more}", "dim")
    if not state.workers:
        text.append(f"\n{'':>{_ID}} no workers", "dim")
    return text


class WorkersTable(VerticalScroll):
    """The workers panel (scrolls when there are more workers than lines)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Workers"
        self._shown: tuple[object, ...] = ()
        self._body = Static(id="workers-body")
        self._last: tuple[RunState, float] | None = None
        self._lines = 0

    def compose(self) -> ComposeResult:
        yield self._body

    def show(self, state: RunState, now: float) -> None:
        """Redraw from the state (only what changed)."""
        self._last = (state, now)
        width = self.scrollable_content_region.width
        rows = tuple(
            (w.worker_id, w.item_id, w.attempt, fmt.duration(max(now - w.since, 0.0)))
            for w in state.workers.values()
        )
        key = (width, rows)
        if key == self._shown:
            return
        self._shown = key
        title = f"Workers {state.in_flight}/{len(state.workers)} busy"
        if title != self.border_title:
            self.border_title = title
        text = workers_text(state, now, width)
        lines = len(text.plain.splitlines())
        self._body.update(text, layout=lines != self._lines)  # the scroll height follows lines
        self._lines = lines

    def on_resize(self, event: Resize) -> None:
        if self._last is not None:
            self.show(*self._last)
