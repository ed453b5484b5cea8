"""Workers: each busy one with its item, attempt and time on it; idle ones summed up."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from .. import formatting as fmt
from ..state import RunState


def workers_table(state: RunState, now: float) -> Table:
    """A compact table: busy workers by id, then one line naming the idle ones."""
    table = Table(box=None, expand=True, pad_edge=False, padding=(0, 1), show_edge=False)
    table.add_column("w", justify="right", no_wrap=True, style="dim")
    table.add_column("item", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("try", justify="right", no_wrap=True)
    table.add_column("for", justify="right", no_wrap=True)
    idle: list[int] = []
    for worker_id in sorted(state.workers):
        worker = state.workers[worker_id]
        if worker.busy:
            table.add_row(
                str(worker_id),
                worker.item_id,
                str(worker.attempt),
                fmt.duration(max(now - worker.since, 0.0)),
            )
        else:
            idle.append(worker_id)
    if idle:
        names = " ".join(str(worker_id) for worker_id in idle)
        table.add_row("", Text(f"{len(idle)} idle: {names}", style="dim"), "", "")
    if not state.workers:
        table.add_row("", Text("no workers", style="dim"), "", "")
    return table


class WorkersTable(VerticalScroll):
    """The workers panel (scrolls when there are more workers than lines)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Workers"
        self._shown: tuple[object, ...] = ()
        self._body = Static(id="workers-body")

    def compose(self) -> ComposeResult:
        yield self._body

    def show(self, state: RunState, now: float) -> None:
        """Redraw from the state (only what changed)."""
        rows = tuple(
            (w.worker_id, w.item_id, w.attempt, fmt.duration(max(now - w.since, 0.0)))
            for w in state.workers.values()
        )
        if rows == self._shown:
            return
        self._shown = rows
        busy = state.in_flight
        self.border_title = f"Workers {busy}/{len(state.workers)} busy"
        self._body.update(workers_table(state, now))
