"""The dashboard app: owns the runner and the run state, and turns keys into commands.

Engine -> UI is pull-based: a timer drains the runner's event buffer a few times a second,
folds the events into the :class:`~abl_tui.session.Dashboard` model and redraws inside one
``batch_update()``; no message is ever posted per event. UI -> engine goes through the
runner's thread-safe methods only; widgets read the state and ask the app to act.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from .formatting import cost as fmt_cost
from .palette import DashboardCommands
from .screens import (
    ConfirmScreen,
    Controls,
    ControlsScreen,
    HelpScreen,
    ItemDetailScreen,
    MainScreen,
    RunsScreen,
)
from .session import Dashboard, RunnerLike
from .themes import DEFAULT_THEME, STATUS_VARIABLES, load_all_themes

#: Seconds between drains of the event buffer (5 Hz).
REFRESH_SECONDS = 0.2
#: Seconds of folding one drain may take before it leaves the rest for the next tick, so a
#: flood of events never starves key handling.
FOLD_BUDGET_SECONDS = 0.08
#: Events taken from the buffer per slice of a drain.
DRAIN_CHUNK = 10_000
#: Seconds to wait for a stopped runner's thread before switching to another run.
SWITCH_JOIN_SECONDS = 60.0

RunnerFactory = Callable[..., RunnerLike]
Command = tuple[str, str, Callable[[], Any]]


def default_runner_factory(*, db_path: Path, run_ref: str, retry_failed: bool) -> RunnerLike:
    """A real runner resuming a stored run (kept open for retries by hand)."""
    from .runner import Runner, RunPlan

    plan = RunPlan(db_path=db_path, run_ref=run_ref, retry_failed=retry_failed, keep_open=True)
    return Runner(plan)


class DashboardApp(App[None]):
    """The live dashboard of one run (read-only when ``read_only``: see :mod:`abl_tui.watch`)."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live anywhere
    TITLE = "abl"
    COMMANDS = App.COMMANDS | {DashboardCommands}
    BINDINGS = [
        Binding("q", "request_quit", "Quit", id="abl.quit"),
        # Ctrl-C does what the README promises: the clean stop ``q`` makes (asking first
        # while the run goes on; a second Ctrl-C answers yes), never Textual's hint toast.
        Binding("ctrl+c", "interrupt", "Quit", show=False, priority=True, id="abl.interrupt"),
        Binding("question_mark", "help", "Help", key_display="?", show=False, id="abl.help"),
    ]

    def __init__(
        self,
        runner: RunnerLike | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = REFRESH_SECONDS,
        started: bool = False,
        runner_factory: RunnerFactory = default_runner_factory,
        read_only: bool = False,
        theme: str | None = None,
        themes_dir: Path | None = None,
        on_theme_chosen: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self._on_theme_chosen = on_theme_chosen
        self.runner = runner
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.read_only = read_only
        self.dashboard = Dashboard()
        self.dashboard.state.read_only = read_only
        self.main = MainScreen(read_only=read_only)
        self._runner_started = started
        self._runner_factory = runner_factory
        self._switching = False
        self._bindings_key: tuple[object, ...] = ()
        self._ended_reported = False
        self._quit_question: ConfirmScreen | None = None
        loaded = load_all_themes(themes_dir)
        for loaded_theme in loaded.themes:
            self.register_theme(loaded_theme)
        self._theme_problems = loaded.problems
        initial_theme = theme or DEFAULT_THEME
        if initial_theme in self.available_themes:
            self.theme = initial_theme  # before mount: the CSS is computed once, not twice

    # ------------------------------------------------------------------ lifecycle

    def get_theme_variable_defaults(self) -> dict[str, str]:
        """Our status colours, for themes (e.g. Textual's own) that do not set them."""
        return dict(STATUS_VARIABLES)

    def on_mount(self) -> None:
        for path, problem in self._theme_problems:
            self.notify(problem, title=f"Theme {path.name} skipped", severity="warning")
        self.push_screen(self.main)
        if self._on_theme_chosen is not None:  # a theme picked in the palette is remembered
            self.theme_changed_signal.subscribe(self, self._theme_chosen)
        self.attach()
        self.set_interval(self.refresh_seconds, self.tick)

    def _theme_chosen(self, theme: Any) -> None:
        if self._on_theme_chosen is not None:
            self._on_theme_chosen(theme.name)

    def attach(self) -> None:
        """Start the runner (unless it already runs) and show whatever is known already."""
        if self.runner is not None and not self._runner_started:
            self.runner.start()
            self._runner_started = True
        self.tick()

    def tick(self) -> None:
        """Drain the runner's events, fold them, and redraw (called ~5 times a second)."""
        runner = self.runner
        dashboard = self.dashboard
        if runner is not None and not self._switching:
            if not dashboard.seeded and runner.ready.is_set():
                dashboard.seed(runner.initial)
            if dashboard.seeded:
                self._drain(runner)
                if runner.done.is_set() and not dashboard.ended:
                    self._drain(runner, budget=None)
                    dashboard.ended = True
                    self._report_end(runner)
            if runner.done.is_set() and runner.cancelled and not self.read_only:
                # A signal (SIGTERM, or SIGINT from outside) stopped the run: the process
                # ends with it (exit 143/130) instead of leaving a dashboard of a dead run.
                self.exit()
                return
            self._follow_controls(runner)
            paused = dashboard.state.paused = runner.paused
            if paused and dashboard.active:
                dashboard.state.mark_paused(self.clock())
        self.redraw()

    def _follow_controls(self, runner: RunnerLike) -> None:
        """Bring the budget and drain state over from the runner; say when the budget starts
        or stops holding dispatch back."""
        state = self.dashboard.state
        note = runner.budget_status
        if (note is None) != (state.budget_note is None) and not self.dashboard.ended:
            now = self.clock()
            if note is not None:
                state.note(now, f"dispatch stopped: {note} (b: raise the limit)", "budget")
                self.notify(
                    f"{note}. Calls under way finish; b raises the limit.",
                    title="Budget reached",
                    severity="warning",
                    timeout=15,
                )
            else:
                state.note(now, "the budget allows more: dispatch goes on", "budget")
        state.budget_note = note
        state.max_cost = runner.max_cost
        state.draining = runner.draining

    def _drain(self, runner: RunnerLike, budget: float | None = FOLD_BUDGET_SECONDS) -> None:
        """Fold buffered events in slices until the buffer is empty or the budget is spent."""
        deadline = None if budget is None else time.perf_counter() + budget
        fold, drain = self.dashboard.fold, runner.buffer.drain
        while fold(drain(DRAIN_CHUNK)) == DRAIN_CHUNK:
            if deadline is not None and time.perf_counter() >= deadline:
                break

    def _report_end(self, runner: RunnerLike) -> None:
        error = getattr(runner.outcome, "error", None)
        if error and not self._ended_reported:
            self._ended_reported = True
            self.dashboard.state.note(self.clock(), f"the run stopped: {error}", "store")
            self.notify(str(error), title="The run stopped", severity="error", timeout=30)

    def redraw(self) -> None:
        """Redraw the main screen from the model in one batch, then the footer if needed."""
        now = self.clock()
        if not self.main.in_view:
            return  # redrawn when it is shown again (MainScreen.on_screen_resume)
        with self.batch_update():
            self.main.show(self.dashboard, now)
        key = (
            self.dashboard.active,
            self.dashboard.ended,
            self.dashboard.state.failed > 0,
            self.dashboard.state.paused,
            self.can_retry_selected(),
            self.main.failed.table.row_count > 0,
        )
        if key != self._bindings_key:
            self._bindings_key = key
            self.main.refresh_bindings()

    # ------------------------------------------------------------------ what can be done

    def _can_command(self) -> bool:
        dashboard = self.dashboard
        return (
            not self.read_only
            and self.runner is not None
            and dashboard.seeded
            and not dashboard.ended
            and not self._switching
        )

    def can_retry_item(self, item_id: str) -> bool:
        """True when ``item_id`` failed and can be sent again now."""
        return self._can_command() and item_id in self.dashboard.state.failed_items

    def can_retry_selected(self) -> bool:
        """True when the highlighted row is a failed item that can be sent again."""
        if not self.main.ready:
            return False
        row = self.main.failed.highlighted_row
        return row is not None and row.state == "failed" and self.can_retry_item(row.item_id)

    def can_retry_all(self) -> bool:
        """True when there are failed items and commands can be sent."""
        return self._can_command() and self.dashboard.state.failed > 0

    def can_pause(self) -> bool:
        """True while pausing or resuming dispatch means something: the run is going (or it
        is paused, so it can be resumed)."""
        return self._can_command() and (self.dashboard.active or self.runner_paused())

    def runner_paused(self) -> bool:
        """True while dispatch is paused."""
        return self.runner is not None and self.runner.paused

    def can_control(self) -> bool:
        """True while workers, limits and the budget can be changed (the run is open)."""
        return self._can_command()

    def can_drain(self) -> bool:
        """True while the run goes and is not draining already."""
        return self._can_command() and self.dashboard.active and not self.dashboard.state.draining

    def can_show_runs(self) -> bool:
        """The runs screen swaps runners, so it is not offered in watch mode."""
        return not self.read_only and self.runner is not None and not self._switching

    # ------------------------------------------------------------------ commands

    def retry_selected(self) -> None:
        """Send the highlighted failed item again."""
        row = self.main.failed.highlighted_row
        if row is not None and self.can_retry_item(row.item_id):
            self.retry_item(row.item_id)

    def retry_item(self, item_id: str) -> None:
        """Send one failed item again; it moves from "failed" to "retried"."""
        if self.runner is None or not self.can_retry_item(item_id):
            return
        self.runner.retry_items([item_id])
        now = self.clock()
        self.dashboard.sent_again([item_id], now)
        self.dashboard.state.note(now, f"retry {item_id} sent")
        self.notify(f"{item_id} sent again", timeout=3)
        self.redraw()

    def request_retry_all(self) -> None:
        """Ask (showing the count), then send every failed item again; with a category
        picked on the failed panel, only that category's items."""
        if not self.can_retry_all():
            return
        category = self.main.failed.category_filter if self.main.ready else ""
        group = self.main.failed.shown_failed_ids() if category else []
        if category and not group:
            category = ""
        count = len(group) if category else self.dashboard.state.failed

        def answered(yes: bool | None) -> None:
            if yes and self.runner is not None and self.can_retry_all():
                self._retry_group(group, category, count)

        noun = "item" if count == 1 else "items"
        question = (
            f"Retry the {count:,} failed {noun} in {category}?"
            if category
            else f"Retry all {count:,} failed {noun}?"
        )
        self.push_screen(
            ConfirmScreen(
                question,
                "They are sent to the provider again; their history is kept.",
                yes="Retry" if category else "Retry all",
                no="Cancel",
            ),
            answered,
        )

    def _retry_group(self, group: list[str], category: str, count: int) -> None:
        """Send a category's items (or, with none, every failed item) again, and show them
        in the table's "retried" view, where their new outcomes arrive."""
        assert self.runner is not None
        if category:
            self.runner.retry_items(group)
            sent = group
        else:
            self.runner.retry_all_failed()
            sent = list(self.dashboard.state.failed_items)
        now = self.clock()
        self.dashboard.sent_again(sent, now)
        what = f"{count:,} failed item{'s' if count != 1 else ''}"
        what += f" in {category}" if category else ""
        self.dashboard.state.note(now, f"retry of {what} sent")
        self.notify(f"{what} sent again")
        if self.main.ready:
            panel = self.main.failed
            panel.category_filter = ""
            panel.status_filter = "retried"
        self.redraw()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume dispatch (attempts under way finish either way)."""
        if self.runner is None or not self.can_pause():
            return
        if paused:
            self.runner.pause()
        else:
            self.runner.resume()
        self.dashboard.state.paused = self.runner.paused
        message = "paused: no new attempts start" if paused else "resumed"
        self.dashboard.state.note(self.clock(), message)
        self.notify(message, timeout=3)
        self.redraw()

    # ------------------------------------------------------------------ live controls

    def current_controls(self) -> Controls:
        """Workers, rpm, tpm and the cost limit in force."""
        state = self.dashboard.state
        return Controls(
            state.max_workers or state.capacity, state.rpm_limit, state.tpm_limit, state.max_cost
        )

    def change_workers(self, step: int) -> None:
        """One worker more or less (``+``/``-``), never fewer than one."""
        if self.can_control():
            self._set_workers(max(1, self.current_controls().workers + step))
            self.redraw()

    def _set_workers(self, count: int) -> None:
        assert self.runner is not None
        self.runner.set_workers(count)
        self.dashboard.state.max_workers = count
        message = f"workers set to {count}"
        self.dashboard.state.note(self.clock(), message)
        self.notify(message, timeout=3)

    def open_controls(self, focus: str = "workers") -> None:
        """Edit workers, rpm, tpm and the cost limit (``L``; ``b`` starts on the cost)."""
        if not self.can_control():
            return
        note = self.dashboard.state.budget_note or ""
        self.push_screen(
            ControlsScreen(self.current_controls(), focus=focus, note=note), self.apply_controls
        )

    def apply_controls(self, controls: Controls | None) -> None:
        """Apply what changed in the controls modal."""
        if controls is None or self.runner is None or not self.can_control():
            return
        old, state, now = self.current_controls(), self.dashboard.state, self.clock()
        if controls.workers != old.workers:
            self._set_workers(controls.workers)
        if (controls.rpm, controls.tpm) != (old.rpm, old.tpm):
            live = self.runner.set_limits(controls.rpm, controls.tpm)
            state.rpm_limit, state.tpm_limit = controls.rpm, controls.tpm
            when = "now" if live else "from the next round (this engine cannot re-pace a round)"
            message = f"pacing {_limit('rpm', controls.rpm)}, {_limit('tpm', controls.tpm)}: {when}"
            state.note(now, message)
            self.notify(message, timeout=5 if live else 10)
        if controls.max_cost != old.max_cost:
            self.runner.set_max_cost(controls.max_cost)
            state.max_cost = controls.max_cost
            message = (
                f"cost limit {fmt_cost(controls.max_cost)}"
                if controls.max_cost is not None
                else "no cost limit"
            )
            state.note(now, message)
            self.notify(message, timeout=3)
        self.redraw()

    def request_drain(self) -> None:
        """Ask, then finish the calls under way, start nothing more and end the run."""
        if not self.can_drain():
            return

        def answered(yes: bool | None) -> None:
            if yes and self.runner is not None and self.can_drain():
                self.runner.drain()
                self.dashboard.state.draining = True
                message = "draining: calls under way finish, nothing new starts"
                self.dashboard.state.note(self.clock(), message)
                self.notify(message, timeout=5)
                self.redraw()

        self.push_screen(
            ConfirmScreen(
                "Drain the run?",
                "Calls under way finish; nothing new is sent. Then the run ends as "
                "interrupted, and resume carries on with the items left.",
                yes="Drain",
                no="Keep running",
            ),
            answered,
        )

    def copy_text(self, text: str, what: str) -> None:
        """Put ``text`` on the clipboard (through the terminal) and say what was copied."""
        self.copy_to_clipboard(text)
        self.notify(f"copied {what} ({len(text):,} characters)", timeout=3)

    def action_help(self) -> None:
        """Show every key (``?``)."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def neighbour_item(self, item_id: str, step: int) -> str | None:
        """The item ``step`` rows from ``item_id`` in the failed table (None past the ends)."""
        keys = self.main.failed.table.keys if self.main.ready else []
        if item_id not in keys:
            return keys[0] if keys and step > 0 else None
        index = keys.index(item_id) + step
        return keys[index] if 0 <= index < len(keys) else None

    def retry_state(self, item_id: str) -> str | None:
        """What became of a hand retry of ``item_id`` (queued, running, ok, failed), if any."""
        row = self.dashboard.retries.items.get(item_id)
        return row.status if row is not None else None

    def open_item(self, item_id: str) -> None:
        """Show an item's detail screen."""
        self.push_screen(ItemDetailScreen(item_id, read_only=self.read_only))

    async def load_item(self, item_id: str) -> Any:
        """An item's stored record (read in the engine's loop), or None."""
        if self.runner is None:
            return None
        return await asyncio.wrap_future(self.runner.fetch_item(item_id))

    async def load_runs(self) -> list[Any]:
        """Summaries of every stored run, newest first."""
        if self.runner is None:
            return []
        return list(await asyncio.wrap_future(self.runner.fetch_runs()))

    def show_runs(self) -> None:
        """Show the runs screen."""
        if self.can_show_runs():
            self.push_screen(RunsScreen(self.dashboard.state.run_id or None))

    def switch_run(self, run_id: str, *, retry_failed: bool) -> None:
        """Leave the current run for a stored one (asking first while the current one runs)."""
        if self.runner is None or self._switching:
            return
        if run_id == self.dashboard.state.run_id and not self.dashboard.ended:
            self._back_to_main()
            if retry_failed:
                self.request_retry_all()
            else:
                self.notify("this run is already open", timeout=3)
            return
        if not self.dashboard.active:
            self._switch(run_id, retry_failed=retry_failed, cancel=False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._switch(run_id, retry_failed=retry_failed, cancel=True)

        self.push_screen(
            ConfirmScreen(
                "The current run is still going. Interrupt it and switch?",
                "Items under way are recorded as interrupted; the run stays resumable.",
                yes="Switch",
                no="Cancel",
            ),
            answered,
        )

    def _switch(self, run_id: str, *, retry_failed: bool, cancel: bool) -> None:
        old = self.runner
        assert old is not None
        self._switching = True
        if cancel:
            old.cancel()
        else:
            old.stop()
        self._back_to_main()
        self.notify(f"opening run {run_id}…", timeout=3)
        self.run_worker(
            self._finish_switch(old, run_id, retry_failed), exclusive=True, group="switch"
        )

    async def _finish_switch(self, old: RunnerLike, run_id: str, retry_failed: bool) -> None:
        await asyncio.to_thread(old.join, SWITCH_JOIN_SECONDS)
        db_path = Path(old.plan.db_path)
        new = self._runner_factory(db_path=db_path, run_ref=run_id, retry_failed=retry_failed)
        self.runner = new
        self.dashboard = Dashboard()
        self.dashboard.state.read_only = self.read_only
        self._runner_started = False
        self._ended_reported = False
        self._switching = False
        self.attach()

    def _back_to_main(self) -> None:
        while len(self.screen_stack) > 1 and self.screen is not self.main:
            self.pop_screen()

    def action_request_quit(self) -> None:
        """Quit; while the run is still going, ask first (then interrupt it, resumably)."""
        runner = self.runner
        if runner is None or self.read_only or not self.dashboard.active:
            if runner is not None and not self.read_only:
                runner.stop()
            self.exit()
            return
        run_id = self.dashboard.state.run_id
        if self._quit_question is not None:
            return  # already asking

        def answered(yes: bool | None) -> None:
            self._quit_question = None
            if yes:
                self.dashboard.state.note(self.clock(), "interrupted by the operator")
                runner.cancel()
                self.exit()

        self._quit_question = ConfirmScreen(
            "The run is still going. Quit now?",
            "Items under way are recorded as interrupted; the run stays resumable:\n"
            f"  abl-tui resume {run_id or 'latest'}\n(Ctrl-C again: quit)",
            yes="Quit",
            no="Keep running",
        )
        self.push_screen(self._quit_question, answered)

    def action_interrupt(self) -> None:
        """Ctrl-C: quit as ``q`` does; pressed again while it asks, the answer is yes."""
        question = self._quit_question
        if question is not None and self.screen is question:
            question.dismiss(True)
            return
        self.action_request_quit()

    async def action_quit(self) -> None:
        """Ctrl+Q and the palette's Quit go through the same question as ``q``."""
        self.action_request_quit()

    # ------------------------------------------------------------------ palette

    def palette_commands(self, screen: Screen[Any]) -> list[Command]:
        """Commands for the palette opened on ``screen``: only those that can run now."""
        commands: list[Command] = []
        on_main = screen is self.main
        row = self.main.failed.highlighted_row if self.main.ready else None
        if on_main and row is not None and self.can_retry_selected():
            commands.append(
                (
                    f"Retry {row.item_id}",
                    "Send the highlighted failed item again",
                    self.retry_selected,
                )
            )
        if isinstance(screen, ItemDetailScreen) and screen.can_retry():
            commands.append(
                (f"Retry {screen.item_id}", "Send this item again", screen.action_retry)
            )
        if self.can_retry_all():
            count = self.dashboard.state.failed
            commands.append(
                (
                    f"Retry all failed ({count:,})",
                    "Send every failed item again (asks first)",
                    self.request_retry_all,
                )
            )
        commands.extend(self._dispatch_commands())
        if on_main and row is not None:
            commands.append(
                (
                    f"Open item {row.item_id}",
                    "Prompt, output, error and attempt history",
                    functools.partial(self.open_item, row.item_id),
                )
            )
        if on_main:
            commands.extend(self._panel_commands())
        commands.append(("Help", "Every key, by screen", self.action_help))
        if self.can_show_runs() and not isinstance(screen, RunsScreen):
            commands.append(
                ("Runs", "Past runs: resume one or retry its failed items", self.show_runs)
            )
        if isinstance(screen, RunsScreen):
            commands.extend(screen.palette_commands())
        if not on_main and not screen.is_modal:
            commands.append(("Back to the dashboard", "Close this screen", self._back_to_main))
        return commands

    def _dispatch_commands(self) -> list[Command]:
        """Pause or resume, the live controls and drain, as far as they can run now."""
        commands: list[Command] = []
        if self.can_pause():
            if self.runner_paused():
                commands.append(("Resume dispatch", "Start new attempts again", self._resume))
            else:
                commands.append(("Pause dispatch", "Start no new attempts", self._pause))
        if self.can_control():
            commands.append(
                (
                    "Live controls",
                    "Workers, requests/min, tokens/min, cost limit",
                    self.open_controls,
                )
            )
        if self.can_drain():
            commands.append(
                (
                    "Drain",
                    "Finish the calls under way, send nothing more, end the run",
                    self.request_drain,
                )
            )
        return commands

    def _panel_commands(self) -> list[Command]:
        """The failed panel's filters and search, the category groups and the event log."""
        panel = self.main.failed
        commands: list[Command] = [
            ("Search failed items", "Filter the table by id or message", panel.open_search),
            ("Next error category", "Show (and retry) one group of failures", panel.cycle_category),
            (
                "Event log",
                "Show or hide the log of rounds, cooldowns and actions",
                self.main.action_toggle_log,
            ),
        ]
        for name in ("failed", "retried", "all"):
            if panel.status_filter != name:
                commands.append(
                    (
                        f"Show {name} items",
                        f"Filter the failed-items table: {name}",
                        functools.partial(setattr, panel, "status_filter", name),
                    )
                )
        return commands

    def _pause(self) -> None:
        self.set_paused(True)

    def _resume(self) -> None:
        self.set_paused(False)


def _limit(name: str, value: float | None) -> str:
    return f"{name} {value:g}" if value is not None else f"no {name} limit"


def run_dashboard(
    runner: RunnerLike,
    *,
    started: bool = False,
    theme: str | None = None,
    on_theme_chosen: Callable[[str], None] | None = None,
) -> RunnerLike:
    """Run the dashboard until the user quits; returns the runner in use at the end (the user
    may have switched runs), after its thread has ended."""
    app = DashboardApp(runner, started=started, theme=theme, on_theme_chosen=on_theme_chosen)
    try:
        app.run()
    finally:
        final = app.runner or runner
        if not final.done.is_set():
            if app.dashboard.active:
                final.cancel()
            else:
                final.stop()
        final.join()
    return final


def run_watch(
    db_path: Path,
    run_ref: str,
    *,
    theme: str | None = None,
    on_theme_chosen: Callable[[str], None] | None = None,
) -> int:
    """Follow a run another process writes (read-only); returns the exit status."""
    from .watch import run_watch as watch

    return watch(db_path, run_ref, theme=theme, on_theme_chosen=on_theme_chosen)
