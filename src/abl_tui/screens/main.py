"""The main screen: the live dashboard of one run.

The screen lays out the widgets and maps keys and buttons to the app's commands; the app
owns the runner and the state, and calls :meth:`MainScreen.show` a few times a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer

from ..session import Dashboard
from ..widgets import (
    CountsStrip,
    EventLog,
    FailedPanel,
    RateLimitsPanel,
    RunHeader,
    RunProgress,
    ThroughputPanel,
    TokensPanel,
    WorkersTable,
)

if TYPE_CHECKING:
    from ..app import DashboardApp


class MainScreen(Screen[None]):
    """Progress, throughput, workers, limits, tokens and the failed items, in one screen."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]

    BINDINGS = [
        # first, so the footer never cuts it off, however narrow the terminal
        Binding("question_mark", "app.help", "Help", key_display="?", id="abl.main.help"),
        Binding("r", "retry_selected", "Retry", id="abl.retry"),
        Binding("R", "retry_all", "Retry all", id="abl.retry_all"),
        Binding("p", "pause", "Pause", id="abl.pause"),
        Binding("p", "resume", "Resume", id="abl.resume"),
        Binding("f", "cycle_filter", "Filter", id="abl.filter"),
        Binding("c", "cycle_category", "Category", show=False, id="abl.category"),
        Binding("s", "cycle_sort", "Sort", show=False, id="abl.sort"),
        Binding("S", "reverse_sort", "Reverse", show=False, id="abl.sort_reverse"),
        Binding("slash", "search", "Search", key_display="/", show=False, id="abl.search"),
        Binding("y", "copy_error", "Copy", show=False, id="abl.copy"),
        Binding("l", "toggle_log", "Log", id="abl.log"),
        Binding("u", "runs", "Runs", show=False, id="abl.runs"),
        Binding("L", "controls", "Controls", show=False, id="abl.controls"),
        Binding("plus", "workers(1)", "Worker +1", key_display="+", show=False, id="abl.more"),
        Binding("minus", "workers(-1)", "Worker -1", key_display="-", show=False, id="abl.fewer"),
        Binding("b", "budget", "Budget", show=False, id="abl.budget"),
        Binding("d", "drain", "Drain", show=False, id="abl.drain"),
        Binding("escape", "clear_search", "Clear search", show=False, id="abl.clear_search"),
    ]

    def __init__(self, *, read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only
        self.ready = False  # children mounted: show() may run

    @property
    def control(self) -> DashboardApp:
        """The app, which owns the runner and carries out the commands."""
        return cast("DashboardApp", self.app)

    def compose(self) -> ComposeResult:
        self._header = RunHeader(read_only=self.read_only, id="header")
        self._progress = RunProgress(id="progress")
        self._strip = CountsStrip(id="strip")
        self._throughput = ThroughputPanel(id="throughput")
        self._tokens = TokensPanel(id="tokens")
        self._limits = RateLimitsPanel(id="limits")
        self._workers = WorkersTable(id="workers")
        self._failed = FailedPanel(read_only=self.read_only, id="failed")
        self._log = EventLog(id="log")
        yield self._header
        yield self._progress
        yield self._strip
        with Horizontal(id="panels"):
            yield self._throughput
            yield self._tokens
            yield self._limits
            yield self._workers
        yield self._failed
        yield self._log
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.failed.table.focus()
        self.ready = True
        self.control.redraw()

    def on_screen_resume(self) -> None:
        self.control.redraw()

    @property
    def in_view(self) -> bool:
        """True when the screen can be seen: on top, or under a modal."""
        stack = self.app.screen_stack
        if not self.ready or not stack or self not in stack:
            return False
        above = stack[stack.index(self) + 1 :]
        return all(screen.is_modal for screen in above)

    @property
    def failed(self) -> FailedPanel:
        """The failed-items panel."""
        return self._failed

    def show(self, dashboard: Dashboard, now: float) -> None:
        """Redraw every widget from the dashboard; each skips its refresh if nothing changed."""
        state = dashboard.state
        self._header.show(dashboard, now)
        self._progress.show(dashboard, now)
        self._strip.show(dashboard, now)
        self._throughput.show(state, now)
        self._tokens.show(state, now)
        self._limits.show(state, now)
        self._workers.show(state, now)
        self._failed.show(dashboard)
        if self.log_shown:
            self._log.show(state)

    @property
    def log_shown(self) -> bool:
        """True while the event log takes the failed panel's place."""
        return self.has_class("-show-log")

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer (and show in the footer) only what can be done right now."""
        control = self.control
        if action == "retry_selected":
            return not self.read_only and control.can_retry_selected()
        if action == "retry_all":
            return False if self.read_only else control.can_retry_all()
        if action in ("pause", "resume"):
            if self.read_only or not control.can_pause():
                return False
            return control.runner_paused() == (action == "resume")
        if action == "open_item":
            return self.failed.highlighted_row is not None
        if action == "runs":
            return control.can_show_runs()
        if action in ("controls", "workers", "budget"):
            return not self.read_only and control.can_control()
        if action == "drain":
            return not self.read_only and control.can_drain()
        if action == "clear_search":
            return bool(self.failed.search_text) or self.failed.search_open
        if action in (
            "cycle_filter",
            "cycle_category",
            "search",
            "copy_error",
            "cycle_sort",
            "reverse_sort",
        ):
            return not self.log_shown
        return True

    def action_retry_selected(self) -> None:
        """Send the highlighted failed item again."""
        self.control.retry_selected()

    def action_retry_all(self) -> None:
        """Ask, then send every failed item again."""
        self.control.request_retry_all()

    def action_open_item(self) -> None:
        """Open the highlighted item's detail."""
        row = self.failed.highlighted_row
        if row is not None:
            self.control.open_item(row.item_id)

    def action_pause(self) -> None:
        """Start no new attempts until resumed."""
        self.control.set_paused(True)

    def action_resume(self) -> None:
        """Start attempts again."""
        self.control.set_paused(False)

    def action_cycle_category(self) -> None:
        """Show one error category at a time (R then retries that group only)."""
        self.failed.cycle_category()

    def action_cycle_sort(self) -> None:
        """Sort the table by the next column (a header click sorts by that column)."""
        self.failed.cycle_sort()

    def action_reverse_sort(self) -> None:
        """Reverse the table's order."""
        self.failed.sort_reverse = not self.failed.sort_reverse

    def action_copy_error(self) -> None:
        """Copy the highlighted item's full error text."""
        row = self.failed.highlighted_row
        if row is not None:
            self.control.copy_text(row.message or "(no error text)", f"{row.item_id}'s error")

    def action_toggle_log(self) -> None:
        """Show the event log in the failed panel's place, or the failed items again."""
        self.toggle_class("-show-log")
        if self.log_shown:
            self._log.show(self.control.dashboard.state, force=True)
        else:
            self.failed.table.focus()
        self.refresh_bindings()

    def action_cycle_filter(self) -> None:
        """Failed → retried → all."""
        self.failed.cycle_filter()

    def action_search(self) -> None:
        """Open the search box."""
        self.failed.open_search()

    def action_clear_search(self) -> None:
        """Clear and close the search box."""
        self.failed.close_search()

    def action_controls(self) -> None:
        """Edit workers, rpm, tpm and the cost limit."""
        self.control.open_controls()

    def action_workers(self, step: int) -> None:
        """One worker more or less."""
        self.control.change_workers(step)

    def action_budget(self) -> None:
        """Set the cost limit."""
        self.control.open_controls(focus="max_cost")

    def action_drain(self) -> None:
        """Ask, then finish the calls under way and end the run (resumable)."""
        self.control.request_drain()

    def action_runs(self) -> None:
        """Show the past runs."""
        self.control.show_runs()

    # ------------------------------------------------------------------ events

    @on(DataTable.RowSelected, "#failed-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.control.open_item(event.row_key.value)

    @on(DataTable.RowHighlighted, "#failed-table")
    def _row_highlighted(self) -> None:
        self.failed.show(self.control.dashboard)  # the Retry button follows the cursor
        self.refresh_bindings()

    @on(Button.Pressed, "#retry-one")
    def _retry_one_pressed(self) -> None:
        self.control.retry_selected()

    @on(Button.Pressed, "#retry-all")
    def _retry_all_pressed(self) -> None:
        self.control.request_retry_all()
