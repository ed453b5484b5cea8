"""Past runs in the store: pick one to resume it, or to send its failed items again.

The list reads the store again every few seconds by itself (the cursor stays on its run).
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Static

from .. import formatting as fmt
from ..messages import RunReader, SwitchRunRequested
from ..palette import PaletteCommand, ScreenCommands
from ..report import run_row

#: Most important first, so a narrow terminal cuts off only the end (it scrolls sideways).
_COLUMNS = (
    ("id", "run", 20),
    ("status", "status", 11),
    ("done", "done", 13),
    ("failed", "failed", 7),
    ("took", "took", 7),
    ("tokens", "tokens", 7),
    ("cost", "cost", 9),
    ("name", "name", 18),
    ("started", "started", 19),
)
#: Seconds between two reads of the runs list while the screen is shown.
RELOAD_SECONDS = 3.0


def _sort_key(column: str, run: Any, row: dict[str, Any]) -> Any:
    """What a run sorts by in ``column`` (unknown values last)."""
    if column == "done":
        return row["succeeded"] + row["failed"]
    if column == "took":
        return run_duration(run) or 0.0
    value = row.get(column)
    if value is None:
        return (1, "")
    return (0, value)


def sort_runs(runs: list[Any], column: str, reverse: bool = False) -> list[Any]:
    """Runs ordered by a column of the table ("" keeps the store's newest-first order)."""
    if not column:
        return list(reversed(runs)) if reverse else list(runs)
    keyed = [(_sort_key(column, run, run_row(run)), index, run) for index, run in enumerate(runs)]
    keyed.sort(key=lambda entry: (entry[0], entry[1]), reverse=reverse)
    return [run for _, _, run in keyed]


def run_duration(run: Any) -> float | None:
    """How long a run has gone: to its end, or to now while it runs (None if never started)."""
    started, finished = getattr(run, "started_at", None), getattr(run, "finished_at", None)
    if not isinstance(started, int | float):
        return None
    end = finished if isinstance(finished, int | float) else None
    if end is None:
        end = time.time() if getattr(run, "status", "") == "running" else None
    return end - started if end is not None else None


class RunsScreen(Screen[None]):
    """The runs list; the run on screen now is marked with a dot."""

    COMMANDS = {ScreenCommands}
    BINDINGS = [
        Binding("escape", "close", "Back", id="abl.runs.back"),
        Binding("o", "resume", "Resume", id="abl.runs.resume"),
        Binding("f", "retry_failed", "Retry failed", id="abl.runs.retry_failed"),
        Binding("ctrl+r", "reload", "Reload", id="abl.runs.reload"),
        Binding("s", "cycle_sort", "Sort", id="abl.runs.sort"),
        Binding("S", "reverse_sort", "Reverse", show=False, id="abl.runs.reverse"),
        Binding("j", "move('cursor_down')", show=False, id="abl.runs.down"),
        Binding("k", "move('cursor_up')", show=False, id="abl.runs.up"),
        Binding("g", "move('scroll_top')", show=False, id="abl.runs.first"),
        Binding("G", "move('scroll_bottom')", show=False, id="abl.runs.last"),
    ]

    def __init__(self, reader: RunReader, current_run_id: str | None = None) -> None:
        super().__init__()
        self.reader = reader
        self.current_run_id = current_run_id
        self.runs: dict[str, dict[str, Any]] = {}
        self.sort_column = ""  # "" keeps the store's order (newest first)
        self.sort_reverse = False
        self._loaded: list[Any] = []

    def compose(self) -> ComposeResult:
        yield Static("Runs  loading…", id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="runs-buttons"):
            yield Button("Resume (o)", id="runs-resume", variant="primary", compact=True)
            yield Button("Retry failed (f)", id="runs-retry", variant="warning", compact=True)
            yield Button("Back (esc)", id="runs-back", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label, width in _COLUMNS:
            table.add_column(label, key=key, width=width)
        table.focus()
        self.load()
        self.set_interval(RELOAD_SECONDS, self.load)

    @work(exclusive=True, group="runs")
    async def load(self) -> None:
        """Fetch the runs (off the UI thread) and fill the table."""
        try:
            runs = await self.reader.load_runs()
        except Exception as exc:  # the store is gone or unreadable: say so, do not crash
            self.query_one("#runs-title", Static).update(Text(f"Runs  could not be read: {exc}"))
            return
        self.show_runs(runs)

    def show_runs(self, runs: list[Any]) -> None:
        """Fill the table from run summaries (newest first)."""
        table = self.query_one(DataTable)
        keep = self.selected
        table.clear()
        self.runs = {}
        self._loaded = list(runs)
        for run in sort_runs(self._loaded, self.sort_column, self.sort_reverse):
            row = run_row(run)
            self.runs[row["id"]] = row
            mark = "● " if row["id"] == self.current_run_id else "  "
            table.add_row(
                Text(mark + row["id"], no_wrap=True, overflow="ellipsis"),
                row["status"],
                f"{row['succeeded'] + row['failed']:,}/{row['total']:,}",
                f"{row['failed']:,}",
                fmt.duration(run_duration(run)),
                fmt.count(row["tokens"]),
                fmt.cost(row["cost"]),
                Text(row["name"] or "", no_wrap=True, overflow="ellipsis"),
                row["started"] or "",
                key=row["id"],
            )
        if keep is not None and keep["id"] in self.runs:
            table.move_cursor(row=table.get_row_index(keep["id"]), animate=False)
        order = ""
        if self.sort_column or self.sort_reverse:
            label = dict((key, name) for key, name, _ in _COLUMNS).get(self.sort_column, "time")
            order = f" · by {label} {'↑' if self.sort_reverse else '↓'}"
        self.query_one("#runs-title", Static).update(
            Text.assemble(("Runs ", "bold"), (f"{len(self.runs)} in the store{order}", "dim"))
        )
        self.refresh_bindings()

    @property
    def selected(self) -> dict[str, Any] | None:
        """The highlighted run's summary, if any."""
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        return self.runs.get(key or "")

    def palette_commands(self) -> list[PaletteCommand]:
        """The selected run's commands, reloading, and back to the dashboard."""
        back = PaletteCommand("Back to the dashboard", "Close this screen", self.action_close)
        run = self.selected
        if run is None:
            return [back]
        commands = [
            PaletteCommand(
                f"Resume run {run['id']}", "Send its items without a result", self.action_resume
            )
        ]
        if run["failed"] > 0:
            commands.append(
                PaletteCommand(
                    f"Retry failed items of run {run['id']} ({run['failed']:,})",
                    "Resume it, sending its failed items again too",
                    self.action_retry_failed,
                )
            )
        commands.append(
            PaletteCommand("Reload runs", "Read the runs list again", self.action_reload)
        )
        return [*commands, back]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Resume and retry need a selected run; retrying needs failed items."""
        if action in ("resume", "retry_failed"):
            run = self.selected
            if run is None:
                return None
            if action == "retry_failed":
                return run["failed"] > 0 or None
        return True

    async def action_move(self, where: str) -> None:
        """Vim-style moves on the runs table (j, k, g, G)."""
        await self.query_one(DataTable).run_action(where)

    def sort_by(self, column: str) -> None:
        """Sort by ``column``; the same column again reverses the order."""
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        self.show_runs(self._loaded)

    def action_cycle_sort(self) -> None:
        """Sort by the next column (then the store's order again)."""
        names = ["", *(key for key, _, _ in _COLUMNS)]
        self.sort_column = names[(names.index(self.sort_column) + 1) % len(names)]
        self.show_runs(self._loaded)

    def action_reverse_sort(self) -> None:
        """Reverse the order."""
        self.sort_reverse = not self.sort_reverse
        self.show_runs(self._loaded)

    @on(DataTable.HeaderSelected)
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by(str(event.column_key.value or ""))

    def action_close(self) -> None:
        """Back to the dashboard."""
        self.dismiss()

    def action_reload(self) -> None:
        """Read the runs again."""
        self.load()

    def action_resume(self) -> None:
        """Carry on the selected run: send every item without a committed result."""
        run = self.selected
        if run is not None:
            self.post_message(SwitchRunRequested(run["id"], retry_failed=False))

    def action_retry_failed(self) -> None:
        """Carry on the selected run, sending its failed items again too."""
        run = self.selected
        if run is not None and run["failed"] > 0:
            self.post_message(SwitchRunRequested(run["id"], retry_failed=True))

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.refresh_bindings()
        run = self.selected
        self.query_one("#runs-retry", Button).disabled = run is None or run["failed"] == 0
        self.query_one("#runs-resume", Button).disabled = run is None

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_resume()

    @on(Button.Pressed, "#runs-resume")
    def _resume_pressed(self) -> None:
        self.action_resume()

    @on(Button.Pressed, "#runs-retry")
    def _retry_pressed(self) -> None:
        self.action_retry_failed()

    @on(Button.Pressed, "#runs-back")
    def _back_pressed(self) -> None:
        self.dismiss()
