"""Workers: each busy one with its item, attempt and time on it; idle ones summed up.

A busy worker waiting between two attempts of its item (back-off or cooldown) is dimmed.
Every line is cut to the panel's width (the scrollbar's column is always kept free), so
nothing wraps, whatever the number of workers.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.widgets import Static

from ..state import RunState

#: Widths of the attempt and time columns (the id column fits the largest id; item the rest).
_TRY, _FOR = 3, 5
#: The narrowest the item column gets before a column makes way for it.
_MIN_ITEM = 5
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


def _fit(line: str, width: int) -> str:
    """``line`` cut to ``width`` cells, ending in an ellipsis when cut."""
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


def idle_line(idle: list[int], width: int) -> str:
    """``14 idle: 3 5 8 …``, naming as many idle workers as fit in ``width``."""
    line = f"{len(idle)} idle"
    names = idle[:_IDLE_NAMED]
    for count in range(len(names), 0, -1):
        more = " …" if count < len(idle) else ""
        candidate = f"{line}: {' '.join(map(str, names[:count]))}{more}"
        if len(candidate) <= width:
            return candidate
    return _fit(line, width)


def workers_text(state: RunState, now: float, width: int) -> Text:
    """Plain fixed-width lines (cheaper to redraw many times a second than a Rich table)."""
    id_width = max((len(str(worker_id)) for worker_id in state.workers), default=1)
    # narrow panels drop the attempt column first, then the time, rather than cut them
    columns = [("try", _TRY), ("for", _FOR)]
    while columns and width - id_width - 1 - sum(size + 1 for _, size in columns) < _MIN_ITEM:
        columns.pop(0)
    item_width = max(width - id_width - 1 - sum(size + 1 for _, size in columns), _MIN_ITEM)
    text = Text(no_wrap=True, overflow="ellipsis")
    header = f"{'w':>{id_width}} {'item':<{item_width}}"
    header += "".join(f" {name:>{size}}" for name, size in columns)
    text.append(_fit(header, width), "dim")
    idle: list[int] = []
    for worker_id in sorted(state.workers):
        worker = state.workers[worker_id]
        if not worker.busy:
            idle.append(worker_id)
            continue
        item = _fit(str(worker.item_id), item_width)
        took = short_duration(max(now - worker.since, 0.0))
        text.append(_fit(f"\n{worker_id:>{id_width}} ", width + 1), "dim")
        values = {"try": str(worker.attempt), "for": took}
        line = f"{item:<{item_width}}"
        line += "".join(f" {values[name]:>{size}}" for name, size in columns)
        text.append(_fit(line, width - id_width - 1), "dim" if worker.waiting else "")
    indent = " " * (id_width + 1)
    if state.waiting:
        text.append("\n" + _fit(f"{indent}{state.waiting} waiting to retry", width), "dim")
    if idle:
        text.append("\n" + indent + idle_line(idle, max(width - id_width - 1, 1)), "dim")
    if not state.workers:
        text.append("\n" + _fit(f"{indent}no workers", width), "dim")
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
        # keep the scrollbar's column free even before it appears, so nothing reflows
        width = self.content_region.width - self.styles.scrollbar_size_vertical
        rows = tuple(
            (w.worker_id, w.item_id, w.attempt, w.waiting, short_duration(max(now - w.since, 0.0)))
            for w in state.workers.values()
        )
        key = (width, rows)
        if key == self._shown:
            return
        self._shown = key
        title = f"Workers {state.busy_text()} busy"
        if title != self.border_title:
            self.border_title = title
        text = workers_text(state, now, width)
        lines = len(text.plain.splitlines())
        self._body.update(text, layout=lines != self._lines)  # the scroll height follows lines
        self._lines = lines

    def on_resize(self, event: Resize) -> None:
        if self._last is not None:
            self.show(*self._last)
