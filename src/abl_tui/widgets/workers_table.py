"""Workers: each busy one with its item, attempt and time on it; idle ones summed up."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.widgets import Static

from ..state import RunState

#: Widths of the attempt and time columns (the id column fits the largest id; item the rest).
_TRY, _FOR = 3, 5
#: Idle worker ids listed by name up to this many (then just counted).
_IDLE_NAMED = 8


def short_duration(seconds: float) -> str:
    """At most five cells: ``42s``, ``12m05``, ``3h07``."""
    whole = int(seconds)
    if whole < 100:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 100:
        return f"{minutes}m{secs:02d}"
    return f"{minutes // 60}h{minutes % 60:02d}"


def workers_text(state: RunState, now: float, width: int) -> Text:
    """Plain fixed-width lines (cheaper to redraw many times a second than a Rich table)."""
    id_width = max((len(str(worker_id)) for worker_id in state.workers), default=1)
    item_width = max(width - id_width - _TRY - _FOR - 3, 4)
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{'w':>{id_width}} {'item':<{item_width}} {'try':>{_TRY}} {'for':>{_FOR}}", "dim")
    idle: list[int] = []
    for worker_id in sorted(state.workers):
        worker = state.workers[worker_id]
        if not worker.busy:
            idle.append(worker_id)
            continue
        item = str(worker.item_id)
        if len(item) > item_width:
            item = item[: item_width - 1] + "…"
        took = short_duration(max(now - worker.since, 0.0))
        text.append(f"\n{worker_id:>{id_width}} ", "dim")
        text.append(f"{item:<{item_width}} {worker.attempt:>{_TRY}} {took:>{_FOR}}")
    if idle:
        named = " ".join(str(worker_id) for worker_id in idle[:_IDLE_NAMED])
        more = "…" if len(idle) > _IDLE_NAMED else ""
        text.append(f"\n{'':>{id_width}} {len(idle)} idle: {named}{more}", "dim")
    if not state.workers:
        text.append(f"\n{'':>{id_width}} no workers", "dim")
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
            (w.worker_id, w.item_id, w.attempt, short_duration(max(now - w.since, 0.0)))
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
