"""The dashboard app: follows a run through its feed and carries out what the screens ask.

Engine -> UI is pull-based: a timer asks the feed (:mod:`abl_tui.feeds`: a live runner, or
watch mode's store polling) to bring the :class:`~abl_tui.model.RunModel` up to date a few
times a second and redraws inside one ``batch_update()``; no message is ever posted per
event. UI -> engine: screens post typed messages (:mod:`abl_tui.messages`) that the app
carries out through the feed's commands; a feed without commands (watch mode) is read-only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from .feeds import (
    LiveCommands,
    RunFeed,
    RunnerFactory,
    RunnerFeed,
    RunnerLike,
    default_runner_factory,
)
from .formatting import cost as fmt_cost
from .messages import (
    Allowed,
    ControlsRequested,
    CopyRequested,
    DrainRequested,
    OpenItem,
    PauseRequested,
    ReplayRequested,
    RetryAllRequested,
    RetryRequested,
    RunsRequested,
    SwitchRunRequested,
    WorkersStepped,
)
from .model import RunModel
from .screens import (
    ConfirmScreen,
    Controls,
    ControlsScreen,
    HelpScreen,
    ItemDetailScreen,
    MainScreen,
    RunsScreen,
)
from .themes import DEFAULT_THEME, STATUS_VARIABLES, load_all_themes

#: Seconds between two pulls of the feed (5 Hz).
REFRESH_SECONDS = 0.2

__all__ = ["DashboardApp", "run_dashboard"]


class DashboardApp(App[None]):
    """The dashboard of one run, live or watched (read-only: the feed has no commands)."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live anywhere
    TITLE = "abl"
    BINDINGS = [
        Binding("q", "request_quit", "Quit", id="abl.quit"),
        # Ctrl-C does what the README promises: the clean stop ``q`` makes (asking first
        # while the run goes on; a second Ctrl-C answers yes), never Textual's hint toast.
        Binding("ctrl+c", "interrupt", "Quit", show=False, priority=True, id="abl.interrupt"),
        Binding("question_mark", "help", "Help", key_display="?", show=False, id="abl.help"),
    ]

    def __init__(
        self,
        feed: RunFeed | RunnerLike,
        *,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = REFRESH_SECONDS,
        started: bool = False,
        runner_factory: RunnerFactory = default_runner_factory,
        theme: str | None = None,
        themes_dir: Path | None = None,
        on_theme_chosen: Callable[[str], None] | None = None,
        on_runner_switched: Callable[[RunnerLike], None] | None = None,
    ) -> None:
        """``feed``: a :class:`RunFeed`, or a runner (followed live; ``started`` says it
        runs already, ``runner_factory`` opens the other runs of its store).
        ``on_runner_switched`` hears of the runner of a run the runs screen switched to
        (the command line's signal handlers stop that one from then on)."""
        super().__init__()
        if not isinstance(feed, RunFeed):
            feed = RunnerFeed(feed, started=started, runner_factory=runner_factory)
        self.feed: RunFeed = feed
        self._on_runner_switched = on_runner_switched
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.read_only = feed.commands is None
        self._model = self._new_model()
        self.main = MainScreen(self, read_only=self.read_only)
        self._on_theme_chosen = on_theme_chosen
        self._switching = False
        self._bindings_key: tuple[object, ...] = ()
        self._end_reported = False
        self._quit_question: ConfirmScreen | None = None
        loaded = load_all_themes(themes_dir)
        for loaded_theme in loaded.themes:
            self.register_theme(loaded_theme)
        self._theme_problems = loaded.problems
        initial_theme = theme or DEFAULT_THEME
        if initial_theme in self.available_themes:
            self.theme = initial_theme  # before mount: the CSS is computed once, not twice

    def _new_model(self) -> RunModel:
        model = RunModel()
        model.state.read_only = self.read_only
        return model

    @property
    def model(self) -> RunModel:
        """The run as folded so far (a new one after switching runs)."""
        return self._model

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
        self._start_feed()
        self.set_interval(self.refresh_seconds, self.tick)

    def _theme_chosen(self, theme: Any) -> None:
        if self._on_theme_chosen is not None:
            self._on_theme_chosen(theme.name)

    def _start_feed(self) -> None:
        """Start the feed, show whatever is known already, and let it follow the run."""
        self.feed.start()
        self.tick()
        self.run_worker(self._follow_feed(self.feed), group="feed")

    async def _follow_feed(self, feed: RunFeed) -> None:
        from .feeds import FeedUnavailable

        try:
            await feed.follow(self.tick)
        except FeedUnavailable as exc:  # no such file or run, not a store: say so and leave
            self.exit(return_code=2, message=f"abl-tui: error: {exc}")

    def tick(self) -> None:
        """Bring the model up to date from the feed and redraw (~5 times a second)."""
        if not self._switching:
            model = self._model
            budget_before = model.state.budget_note
            self.feed.pull(model, self.clock())
            if self.feed.stopped_by_signal and not self.read_only:
                # A signal (SIGTERM, or SIGINT from outside) stopped the run: the process
                # ends with it (exit 143/130) instead of leaving a dashboard of a dead run.
                self.exit()
                return
            self._announce(budget_before)
        self.redraw()

    def _announce(self, budget_before: str | None) -> None:
        """Toast what the operator must not miss: the budget stopping dispatch, or the run
        stopping on an error."""
        model = self._model
        note = model.state.budget_note
        if note is not None and budget_before is None and not model.ended:
            self.notify(
                f"{note}. Calls under way finish; b raises the limit.",
                title="Budget reached",
                severity="warning",
                timeout=15,
            )
        error = self.feed.error if model.ended and not self._end_reported else None
        if error:
            self._end_reported = True
            model.state.note(self.clock(), f"the run stopped: {error}", "store")
            self.notify(error, title="The run stopped", severity="error", timeout=30)

    def redraw(self) -> None:
        """Redraw the main screen from the model in one batch, then the footer if needed."""
        if not self.main.in_view:
            return  # drawn when it is shown again (MainScreen.on_screen_resume)
        model = self._model
        with self.batch_update():
            self.main.draw(model, self.clock())
        key = (
            model.active,
            model.ended,
            model.state.failed > 0,
            model.state.paused,
            self.main.can_retry_selected(),
            self.main.failed.table.row_count > 0,
        )
        if key != self._bindings_key:
            self._bindings_key = key
            self.main.refresh_bindings()

    # ------------------------------------------------------------------ what can be done

    def _commands(self) -> LiveCommands | None:
        """The run's commands while they can be used: the feed has some (not watch mode),
        the stored run is loaded, the engine is still there and no switch is under way."""
        model = self._model
        if self._switching or not model.seeded or model.ended:
            return None
        return self.feed.commands

    @property
    def allowed(self) -> Allowed:
        """What the operator can ask now (the screens offer only this)."""
        commands = self._commands()
        model = self._model
        runs = self.feed.commands is not None and not self._switching
        if commands is None:
            return Allowed(runs=runs)
        paused = commands.runner.paused
        return Allowed(
            retry=True,
            pause=model.active or paused,
            paused=paused,
            controls=True,
            drain=model.active and not model.state.draining,
            runs=runs,
        )

    def can_retry_item(self, item_id: str) -> bool:
        """True when ``item_id`` failed and can be sent again now."""
        return self.allowed.retry and item_id in self._model.state.failed_items

    def neighbour_item(self, item_id: str, step: int) -> str | None:
        """The item ``step`` rows from ``item_id`` in the dashboard's table."""
        return self.main.neighbour_item(item_id, step)

    async def load_item(self, item_id: str) -> Any:
        """An item's stored record (read off the UI thread), or None."""
        return await self.feed.load_item(item_id)

    async def load_runs(self) -> list[Any]:
        """Summaries of every stored run, newest first."""
        return await self.feed.load_runs()

    # ------------------------------------------------------------------ retries

    @on(RetryRequested)
    def _retry_requested(self, message: RetryRequested) -> None:
        for item_id in message.item_ids:
            self.retry_item(item_id)

    def retry_item(self, item_id: str) -> None:
        """Send one failed item again; it moves from "failed" to "retried"."""
        commands = self._commands()
        if commands is None or not self.can_retry_item(item_id):
            return
        commands.runner.retry_items([item_id])
        self._model.sent_again([item_id])
        self._model.state.note(self.clock(), f"retry {item_id} sent")
        self.notify(f"{item_id} sent again", timeout=3)
        self.redraw()

    @on(ReplayRequested)
    def _replay_requested(self, message: ReplayRequested) -> None:
        """Send one item again with its edited prompt and options, as a new attempt."""
        commands = self._commands()
        if commands is None:
            return
        retried = self._model.retries.items.get(message.item_id)
        if retried is not None and retried.status in ("queued", "running"):
            self.notify(f"{message.item_id} is already on its way: replay it once it is back")
            return
        commands.runner.replay(message.item_id, message.prompt, message.options)
        self._model.replay_sent(message.item_id, succeeded=message.succeeded)
        self._model.state.note(self.clock(), f"replay {message.item_id} sent")
        self.notify(f"{message.item_id} replayed with the edited prompt", timeout=3)
        self.redraw()

    @on(RetryAllRequested)
    def _retry_all_requested(self, message: RetryAllRequested) -> None:
        """Ask (showing the count), then send every failed item again; with a category
        picked on the failed panel, only that category's items."""
        if not (self.allowed.retry and self._model.state.failed > 0):
            return
        category, group = message.category, list(message.item_ids)
        if category and not group:
            category = ""
        count = len(group) if category else self._model.state.failed

        def answered(yes: bool | None) -> None:
            if yes and self.allowed.retry and self._model.state.failed > 0:
                # Only those still failed: one may have been retried while the question was up.
                still_failed = self._model.state.failed_items
                self._retry_group([i for i in group if i in still_failed], category, count)

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
        commands = self._commands()
        assert commands is not None
        if category:
            commands.runner.retry_items(group)
            sent = group
        else:
            commands.runner.retry_all_failed()
            sent = list(self._model.state.failed_items)
        self._model.sent_again(sent)
        what = f"{count:,} failed item{'s' if count != 1 else ''}"
        what += f" in {category}" if category else ""
        self._model.state.note(self.clock(), f"retry of {what} sent")
        self.notify(f"{what} sent again")
        self.main.show_retried()
        self.redraw()

    # ------------------------------------------------------------------ dispatch

    @on(PauseRequested)
    def _pause_requested(self, message: PauseRequested) -> None:
        self.set_paused(message.paused)

    def set_paused(self, paused: bool) -> None:
        """Pause or resume dispatch (attempts under way finish either way)."""
        commands = self._commands()
        if commands is None or not self.allowed.pause:
            return
        if paused:
            commands.runner.pause()
        else:
            commands.runner.resume()
        self._model.state.paused = commands.runner.paused
        message = "paused: no new attempts start" if paused else "resumed"
        self._model.state.note(self.clock(), message)
        self.notify(message, timeout=3)
        self.redraw()

    def current_controls(self) -> Controls:
        """Workers, rpm, tpm and the cost limit in force."""
        state = self._model.state
        return Controls(
            state.max_workers or state.capacity, state.rpm_limit, state.tpm_limit, state.max_cost
        )

    @on(WorkersStepped)
    def _workers_stepped(self, message: WorkersStepped) -> None:
        """One worker more or less, never fewer than one."""
        commands = self._commands()
        if commands is not None:
            self._set_workers(commands, max(1, self.current_controls().workers + message.step))
            self.redraw()

    def _set_workers(self, commands: LiveCommands, count: int) -> None:
        commands.runner.set_workers(count)
        self._model.state.max_workers = count
        message = f"workers set to {count}"
        self._model.state.note(self.clock(), message)
        self.notify(message, timeout=3)

    @on(ControlsRequested)
    def _controls_requested(self, message: ControlsRequested) -> None:
        """Edit workers, rpm, tpm and the cost limit."""
        if self._commands() is None:
            return
        note = self._model.state.budget_note or ""
        self.push_screen(
            ControlsScreen(self.current_controls(), focus=message.focus, note=note),
            self.apply_controls,
        )

    def apply_controls(self, controls: Controls | None) -> None:
        """Apply what changed in the controls modal."""
        commands = self._commands()
        if controls is None or commands is None:
            return
        old = self.current_controls()
        if controls.workers != old.workers:
            self._set_workers(commands, controls.workers)
        if (controls.rpm, controls.tpm) != (old.rpm, old.tpm):
            self._set_pacing(commands, controls.rpm, controls.tpm)
        if controls.max_cost != old.max_cost:
            self._set_max_cost(commands, controls.max_cost)
        self.redraw()

    def _set_pacing(self, commands: LiveCommands, rpm: float | None, tpm: float | None) -> None:
        state = self._model.state
        live = commands.runner.set_limits(rpm, tpm)
        state.rpm_limit, state.tpm_limit = rpm, tpm
        when = "now" if live else "from the next round (none is under way)"
        message = f"pacing {_limit('rpm', rpm)}, {_limit('tpm', tpm)}: {when}"
        state.note(self.clock(), message)
        self.notify(message, timeout=5 if live else 10)

    def _set_max_cost(self, commands: LiveCommands, max_cost: float | None) -> None:
        commands.runner.set_max_cost(max_cost)
        self._model.state.max_cost = max_cost
        message = f"cost limit {fmt_cost(max_cost)}" if max_cost is not None else "no cost limit"
        self._model.state.note(self.clock(), message)
        self.notify(message, timeout=3)

    @on(DrainRequested)
    def _drain_requested(self) -> None:
        """Ask, then finish the calls under way, start nothing more and end the run."""
        if not self.allowed.drain:
            return

        def answered(yes: bool | None) -> None:
            commands = self._commands()
            if yes and commands is not None and self.allowed.drain:
                commands.runner.drain()
                self._model.state.draining = True
                message = "draining: calls under way finish, nothing new starts"
                self._model.state.note(self.clock(), message)
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

    # ------------------------------------------------------------------ screens

    @on(CopyRequested)
    def _copy_requested(self, message: CopyRequested) -> None:
        """Put the text on the clipboard (through the terminal) and say what was copied."""
        self.copy_to_clipboard(message.text)
        self.notify(f"copied {message.what} ({len(message.text):,} characters)", timeout=3)

    def action_help(self) -> None:
        """Show every key (``?``)."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    @on(OpenItem)
    def _open_item_requested(self, message: OpenItem) -> None:
        self.open_item(message.item_id)

    def open_item(self, item_id: str) -> None:
        """Show an item's detail screen."""
        self.push_screen(ItemDetailScreen(item_id, self, read_only=self.read_only))

    @on(RunsRequested)
    def show_runs(self) -> None:
        """Show the runs screen (not in watch mode: it opens other runs)."""
        if self.allowed.runs:
            self.push_screen(RunsScreen(self, self._model.state.run_id or None))

    @on(SwitchRunRequested)
    def _switch_requested(self, message: SwitchRunRequested) -> None:
        self.switch_run(message.run_id, retry_failed=message.retry_failed)

    def switch_run(self, run_id: str, *, retry_failed: bool) -> None:
        """Leave the current run for a stored one (asking first while the current one runs)."""
        if self.feed.commands is None or self._switching:
            return
        model = self._model
        if run_id == model.state.run_id and not model.ended:
            self._back_to_main()
            if retry_failed:
                self.main.action_retry_all()
            else:
                self.notify("this run is already open", timeout=3)
            return
        if not model.active:
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
        commands = self.feed.commands
        assert commands is not None
        self._switching = True
        if cancel:
            commands.runner.cancel()
        else:
            commands.runner.stop()
        self._back_to_main()
        self.notify(f"opening run {run_id}…", timeout=3)
        self.run_worker(
            self._finish_switch(commands, run_id, retry_failed), exclusive=True, group="switch"
        )

    async def _finish_switch(self, commands: LiveCommands, run_id: str, retry: bool) -> None:
        self.feed = await commands.open_run(run_id, retry_failed=retry)
        if self._on_runner_switched is not None and isinstance(self.feed, RunnerFeed):
            self._on_runner_switched(self.feed.runner)
        self._model = self._new_model()
        self._end_reported = False
        self._switching = False
        self._start_feed()

    def _back_to_main(self) -> None:
        while len(self.screen_stack) > 1 and self.screen is not self.main:
            self.pop_screen()

    # ------------------------------------------------------------------ quitting

    def action_request_quit(self) -> None:
        """Quit; while the run is still going, ask first (then interrupt it, resumably)."""
        commands = self.feed.commands
        if commands is None or not self._model.active:
            if commands is not None:
                commands.runner.stop()
            self.exit()
            return
        run_id = self._model.state.run_id
        if self._quit_question is not None:
            return  # already asking

        def answered(yes: bool | None) -> None:
            self._quit_question = None
            if yes:
                self._model.state.note(self.clock(), "interrupted by the operator")
                commands.runner.cancel()
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

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The palette's commands for every screen: the run's (as far as they can run
        now), help and runs; each screen adds its own (see :mod:`abl_tui.palette`)."""
        yield from super().get_system_commands(screen)
        allowed = self.allowed
        if allowed.retry and self._model.state.failed > 0:
            count = self._model.state.failed
            yield SystemCommand(
                f"Retry all failed ({count:,})",
                "Send every failed item again (asks first)",
                self.main.action_retry_all,
            )
        yield from _dispatch_commands(allowed, self)
        yield SystemCommand("Help", "Every key, by screen", self.action_help)
        if allowed.runs and not isinstance(screen, RunsScreen):
            yield SystemCommand(
                "Runs", "Past runs: resume one or retry its failed items", self.show_runs
            )


def _dispatch_commands(allowed: Allowed, app: DashboardApp) -> Iterable[SystemCommand]:
    """Pause or resume, the live controls and drain, as far as they can run now."""
    if allowed.pause and allowed.paused:
        yield SystemCommand(
            "Resume dispatch", "Start new attempts again", lambda: app.set_paused(False)
        )
    elif allowed.pause:
        yield SystemCommand("Pause dispatch", "Start no new attempts", lambda: app.set_paused(True))
    if allowed.controls:
        yield SystemCommand(
            "Live controls",
            "Workers, requests/min, tokens/min, cost limit",
            lambda: app.post_message(ControlsRequested()),
        )
    if allowed.drain:
        yield SystemCommand(
            "Drain",
            "Finish the calls under way, send nothing more, end the run",
            lambda: app.post_message(DrainRequested()),
        )


def _limit(name: str, value: float | None) -> str:
    return f"{name} {value:g}" if value is not None else f"no {name} limit"


def run_dashboard(
    runner: RunnerLike,
    *,
    started: bool = False,
    theme: str | None = None,
    on_theme_chosen: Callable[[str], None] | None = None,
    on_runner_switched: Callable[[RunnerLike], None] | None = None,
) -> RunnerLike:
    """Run the dashboard until the user quits; returns the runner in use at the end (the user
    may have switched runs), after its thread has ended."""
    app = DashboardApp(
        runner,
        started=started,
        theme=theme,
        on_theme_chosen=on_theme_chosen,
        on_runner_switched=on_runner_switched,
    )
    try:
        app.run()
    finally:
        final = app.feed.runner if isinstance(app.feed, RunnerFeed) else runner
        if not final.done.is_set():
            if app.model.active:
                final.cancel()
            else:
                final.stop()
        final.join()
    return final
