"""The main screen: the live dashboard of one run.

The screen lays out the widgets and turns keys and buttons into messages for the app
(:mod:`abl_tui.messages`); the app owns the feed and the model, and calls
:meth:`MainScreen.draw` a few times a second.
"""

from __future__ import annotations

import functools

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer

from ..messages import (
    ControlsRequested,
    CopyRequested,
    DrainRequested,
    OpenItem,
    PauseRequested,
    RetryAllRequested,
    RetryRequested,
    RunReader,
    RunsRequested,
    WorkersStepped,
)
from ..model import RunModel
from ..palette import PaletteCommand, ScreenCommands
from ..widgets import (
    BatchJobsPanel,
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


class MainScreen(Screen[None]):
    """Progress, throughput, workers, limits, tokens and the failed items, in one screen."""

    COMMANDS = {ScreenCommands}
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

    def __init__(self, reader: RunReader, *, read_only: bool = False) -> None:
        super().__init__()
        self.reader = reader
        self.read_only = read_only
        self.ready = False  # children mounted: draw() may run

    def compose(self) -> ComposeResult:
        self._header = RunHeader(read_only=self.read_only, id="header")
        self._progress = RunProgress(id="progress")
        self._strip = CountsStrip(id="strip")
        self._throughput = ThroughputPanel(id="throughput")
        self._tokens = TokensPanel(id="tokens")
        self._limits = RateLimitsPanel(id="limits")
        self._workers = WorkersTable(id="workers")
        self._failed = FailedPanel(read_only=self.read_only, id="failed")
        self._batches = BatchJobsPanel(id="batches")
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
        yield self._batches
        yield self._log
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.failed.table.focus()
        self.ready = True
        self._draw_now()

    def on_screen_resume(self) -> None:
        self._draw_now()

    def _draw_now(self) -> None:
        """Draw at once from the model (the app's timer draws only a screen in view)."""
        self.draw(self.reader.model, self.reader.clock())
        self.refresh_bindings()

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

    def draw(self, model: RunModel, now: float) -> None:
        """Redraw every widget from the model; each skips its refresh if nothing changed."""
        state = model.state
        self._header.show(model, now)
        self._progress.show(model, now)
        self._strip.show(model, now)
        self._throughput.show(state, now)
        self._tokens.show(state, now)
        self._limits.show(state, now)
        self._workers.show(state, now)
        self._failed.show(model)
        self._batches.display = bool(model.batches)
        if model.batches:
            self._batches.show(model.batches, now)
        if self.log_shown:
            self._log.show(state)

    def can_retry_selected(self) -> bool:
        """True when the highlighted row is a failed item that can be sent again now."""
        if not self.ready:
            return False
        row = self.failed.highlighted_row
        return (
            row is not None
            and row.state == "failed"
            and self.reader.allowed.retry
            and row.item_id in self.reader.model.state.failed_items
        )

    def neighbour_item(self, item_id: str, step: int) -> str | None:
        """The item ``step`` rows from ``item_id`` in the failed table (None past the ends)."""
        keys = self.failed.table.keys if self.ready else []
        if item_id not in keys:
            return keys[0] if keys and step > 0 else None
        index = keys.index(item_id) + step
        return keys[index] if 0 <= index < len(keys) else None

    def show_retried(self) -> None:
        """After a retry of many: every category, in the table's "retried" view."""
        if self.ready:
            self.failed.category_filter = ""
            self.failed.status_filter = "retried"

    @property
    def log_shown(self) -> bool:
        """True while the event log takes the failed panel's place."""
        return self.has_class("-show-log")

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer (and show in the footer) only what can be done right now."""
        if action in _RUN_ACTIONS:
            return not self.read_only and self._run_action_allowed(action)
        if action == "open_item":
            return self.failed.highlighted_row is not None
        if action == "runs":
            return self.reader.allowed.runs
        if action == "clear_search":
            return bool(self.failed.search_text) or self.failed.search_open
        if action in _TABLE_ACTIONS:
            return not self.log_shown
        return True

    def _run_action_allowed(self, action: str) -> bool:
        allowed = self.reader.allowed
        if action == "retry_selected":
            return self.can_retry_selected()
        if action == "retry_all":
            return allowed.retry and self.reader.model.state.failed > 0
        if action in ("pause", "resume"):
            return allowed.pause and allowed.paused == (action == "resume")
        if action == "drain":
            return allowed.drain
        return allowed.controls  # controls, workers, budget

    def action_retry_selected(self) -> None:
        """Send the highlighted failed item again."""
        row = self.failed.highlighted_row
        if row is not None and self.can_retry_selected():
            self.post_message(RetryRequested((row.item_id,)))

    def action_retry_all(self) -> None:
        """Ask, then send every failed item shown again (one category's when one is picked)."""
        category = self.failed.category_filter if self.ready else ""
        group = tuple(self.failed.shown_failed_ids()) if category else ()
        self.post_message(RetryAllRequested(category, group))

    def action_open_item(self) -> None:
        """Open the highlighted item's detail."""
        row = self.failed.highlighted_row
        if row is not None:
            self.post_message(OpenItem(row.item_id))

    def action_pause(self) -> None:
        """Start no new attempts until resumed."""
        self.post_message(PauseRequested(True))

    def action_resume(self) -> None:
        """Start attempts again."""
        self.post_message(PauseRequested(False))

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
            text = row.message or "(no error text)"
            self.post_message(CopyRequested(text, f"{row.item_id}'s error"))

    def action_toggle_log(self) -> None:
        """Show the event log in the failed panel's place, or the failed items again."""
        self.toggle_class("-show-log")
        if self.log_shown:
            self._log.show(self.reader.model.state, force=True)
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
        self.post_message(ControlsRequested())

    def action_workers(self, step: int) -> None:
        """One worker more or less."""
        self.post_message(WorkersStepped(step))

    def action_budget(self) -> None:
        """Set the cost limit."""
        self.post_message(ControlsRequested(focus="max_cost"))

    def action_drain(self) -> None:
        """Ask, then finish the calls under way and end the run (resumable)."""
        self.post_message(DrainRequested())

    def action_runs(self) -> None:
        """Show the past runs."""
        self.post_message(RunsRequested())

    # ------------------------------------------------------------------ palette

    def palette_commands(self) -> list[PaletteCommand]:
        """The highlighted row's commands, the table's filters and search, and the log."""
        commands: list[PaletteCommand] = []
        row = self.failed.highlighted_row if self.ready else None
        if row is not None and self.can_retry_selected():
            commands.append(
                PaletteCommand(
                    f"Retry {row.item_id}",
                    "Send the highlighted failed item again",
                    self.action_retry_selected,
                )
            )
        if row is not None:
            commands.append(
                PaletteCommand(
                    f"Open item {row.item_id}",
                    "Prompt, output, error and attempt history",
                    self.action_open_item,
                )
            )
        return commands + self._panel_commands()

    def _panel_commands(self) -> list[PaletteCommand]:
        panel = self.failed
        commands = [
            PaletteCommand(
                "Search failed items", "Filter the table by id or message", panel.open_search
            ),
            PaletteCommand(
                "Next error category",
                "Show (and retry) one group of failures",
                panel.cycle_category,
            ),
            PaletteCommand(
                "Event log",
                "Show or hide the log of rounds, cooldowns and actions",
                self.action_toggle_log,
            ),
        ]
        for name in ("failed", "retried", "all"):
            if panel.status_filter != name:
                commands.append(
                    PaletteCommand(
                        f"Show {name} items",
                        f"Filter the failed-items table: {name}",
                        functools.partial(setattr, panel, "status_filter", name),
                    )
                )
        return commands

    # ------------------------------------------------------------------ events

    @on(DataTable.RowSelected, "#failed-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(OpenItem(event.row_key.value))

    @on(DataTable.RowHighlighted, "#failed-table")
    def _row_highlighted(self) -> None:
        self.failed.show(self.reader.model)  # the Retry button follows the cursor
        self.refresh_bindings()

    @on(Button.Pressed, "#retry-one")
    def _retry_one_pressed(self) -> None:
        self.action_retry_selected()

    @on(Button.Pressed, "#retry-all")
    def _retry_all_pressed(self) -> None:
        self.action_retry_all()


#: Actions that command the run: never offered read-only, else as far as they can run now.
_RUN_ACTIONS = frozenset(
    {"retry_selected", "retry_all", "pause", "resume", "controls", "workers", "budget", "drain"}
)
#: Actions on the failed table, not offered while the event log takes its place.
_TABLE_ACTIONS = frozenset(
    {"cycle_filter", "cycle_category", "search", "copy_error", "cycle_sort", "reverse_sort"}
)
