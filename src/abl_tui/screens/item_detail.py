"""One item's story: error, prompt, context, output and attempt history, read from the store.

The error comes first for a failed item (it is why the item was opened). After a retry
from here the screen follows the item's new attempts and reads it again once it has a new
outcome; ``[`` and ``]`` step through the items of the dashboard's table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Static

from .. import formatting as fmt
from ..messages import CopyRequested, ReplayRequested, RetryRequested, RunReader
from ..palette import PaletteCommand, ScreenCommands
from .attempts import AttemptsScreen
from .replay import ReplayEdit, ReplayScreen


@dataclass
class AttemptView:
    """One attempt as the history table shows it."""

    number: int
    outcome: str
    category: str
    duration: float | None
    error: str


@dataclass
class ItemView:
    """What the screen shows of an item, whatever shape the store's record has."""

    item_id: str
    status: str = "unknown"
    prompt: str = ""
    context: str = ""
    output: str = ""
    error: str = ""
    error_category: str = ""
    attempts: int = 0
    history: list[AttemptView] = field(default_factory=list)

    @classmethod
    def from_record(cls, item_id: str, record: Any) -> ItemView:
        """Read a store item record (attributes or a mapping) defensively."""

        def get(obj: Any, name: str, default: Any = None) -> Any:
            if isinstance(obj, dict):
                return obj.get(name, default)
            return getattr(obj, name, default)

        history_rows = get(record, "history", None) or get(record, "attempt_log", None) or []
        attempts = get(record, "attempts", 0)
        if isinstance(attempts, list):  # a record whose attempts are the history itself
            history_rows, attempts = attempts, len(attempts)
        history = [
            AttemptView(
                number=get(row, "attempt", index + 1) or index + 1,
                outcome=str(get(row, "outcome", "") or get(row, "status", "") or ""),
                category=str(get(row, "error_category", "") or ""),
                duration=get(row, "duration", None),
                error=str(get(row, "error", "") or ""),
            )
            for index, row in enumerate(history_rows)
        ]
        return cls(
            item_id=item_id,
            status=str(get(record, "status", "unknown") or "unknown"),
            prompt=_text(get(record, "prompt", "")),
            context=_text(get(record, "context", None)),
            output=_text(get(record, "output", "")),
            error=str(get(record, "error", "") or ""),
            error_category=str(get(record, "error_category", "") or ""),
            attempts=int(attempts or 0),
            history=history,
        )


def _text(value: Any) -> str:
    """A prompt or output as text (structured values as indented JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except TypeError:
        return str(value)


def calls_text(view: ItemView) -> str:
    """``3 calls: 2 tries + 1 rate-limited (429s do not use up max_attempts)``."""
    calls = max(view.attempts, len(view.history))
    limited = sum(1 for attempt in view.history if attempt.outcome == "rate_limited")
    text = f"{calls} call{'s' if calls != 1 else ''}"
    if limited:
        tries = calls - limited
        text += (
            f": {tries} tr{'ies' if tries != 1 else 'y'} + {limited} rate-limited "
            "(429s do not use up max_attempts)"
        )
    return text


def _took(seconds: float | None) -> str:
    """An attempt's duration: ``0.25s`` under ten seconds, else ``1m 05s``."""
    if seconds is not None and 0 <= seconds < 10:
        return f"{seconds:.2f}s"
    return fmt.duration(seconds)


class ItemDetailScreen(Screen[None]):
    """Opened with Enter on a row; Esc goes back; Retry sends a failed item again."""

    COMMANDS = {ScreenCommands}
    BINDINGS = [
        Binding("escape", "close", "Back", id="abl.detail.back"),
        Binding("r", "retry", "Retry", id="abl.detail.retry"),
        Binding("a", "attempts", "Attempts", id="abl.detail.attempts"),
        Binding("e", "replay", "Replay", id="abl.detail.replay"),
        Binding("left_square_bracket", "step(-1)", "Prev", key_display="[", id="abl.detail.prev"),
        Binding("right_square_bracket", "step(1)", "Next", key_display="]", id="abl.detail.next"),
        Binding("y", "copy('error')", "Copy", id="abl.detail.copy"),
        Binding("Y", "copy('prompt')", "Copy prompt", show=False, id="abl.detail.copy_prompt"),
    ]

    #: Seconds between two looks at a retried item's progress.
    FOLLOW_SECONDS = 0.5

    def __init__(self, item_id: str, reader: RunReader, *, read_only: bool = False) -> None:
        super().__init__()
        self.item_id = item_id
        self.reader = reader
        self.read_only = read_only
        self.view: ItemView | None = None
        self.record: Any = None  # the store's record, as loaded
        self._sent = False
        self._sent_as = "retry"  # how it was sent again: "retry" or "replay"
        self._followed: str | None = None  # the retry state last shown

    def compose(self) -> ComposeResult:
        yield Static(Text(f"item {self.item_id}  loading…"), id="detail-title")
        with VerticalScroll(id="detail-body"):
            yield Static("Error", classes="detail-heading", id="error-heading")
            yield Static(id="detail-error", classes="detail-text", markup=False)
            yield Static("Prompt", classes="detail-heading")
            yield Static(id="detail-prompt", classes="detail-text", markup=False)
            yield Static("Context", classes="detail-heading")
            yield Static(id="detail-context", classes="detail-text", markup=False)
            yield Static("Output", classes="detail-heading")
            yield Static(id="detail-output", classes="detail-text", markup=False)
            yield Static("Attempts", classes="detail-heading")
            yield DataTable(id="detail-attempts", cursor_type="none", zebra_stripes=True)
        with Horizontal(id="detail-buttons"):
            if not self.read_only:
                yield Button("Retry", id="detail-retry", variant="primary", compact=True)
            yield Button("Back", id="detail-back", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#detail-attempts", DataTable)
        table.add_column("#", key="n", width=3)
        table.add_column("outcome", key="outcome", width=10)
        table.add_column("category", key="category", width=16)
        table.add_column("took", key="took", width=7)
        # the error column takes the width left (2 cells of padding per column, 1 margin)
        table.add_column(
            "error", key="error", width=max(self.size.width - 3 - 10 - 16 - 7 - 13, 12)
        )
        self._set_retry_enabled()
        self.load()
        if not self.read_only:
            self.set_interval(self.FOLLOW_SECONDS, self.follow)

    def follow(self) -> None:
        """After a retry: show its progress, and read the item again once it has an outcome."""
        state = self._retry_state() if self._sent else None
        if state is None or state == self._followed:
            return
        self._followed = state
        if state in ("ok", "failed"):
            self._sent = False
            self.load()
        elif self.view is not None:
            self.view.status = f"{self._sent_as} {state}"
            self._show_title(self.view)

    def _retry_state(self) -> str | None:
        """What became of this item's hand retry (queued, running, ok, failed), if any."""
        row = self.reader.model.retries.items.get(self.item_id)
        return row.status if row is not None else None

    @work(exclusive=True, group="item-detail")
    async def load(self) -> None:
        """Fetch the item (the app reads the store off the UI thread) and fill the screen."""
        try:
            record = await self.reader.load_item(self.item_id)
        except Exception as exc:  # a closed store, a vanished file: say so, do not crash
            self.query_one("#detail-title", Static).update(
                Text(f"item {self.item_id}  could not be read: {exc}")
            )
            return
        if record is None:
            self.query_one("#detail-title", Static).update(
                Text(f"item {self.item_id}  not found in the store")
            )
            return
        self.record = record
        self.show_item(ItemView.from_record(self.item_id, record))

    def show_item(self, view: ItemView) -> None:
        """Fill the screen from a loaded item."""
        self.view = view
        self._show_title(view)
        failed = bool(view.error)
        # the error first when there is one (that is why the item was opened); else last
        self.query_one("#error-heading").display = failed
        self.query_one("#detail-error").display = failed
        self.query_one("#detail-prompt", Static).update(view.prompt or "—")
        self.query_one("#detail-context", Static).update(view.context or "—")
        self.query_one("#detail-output", Static).update(view.output or "—")
        self.query_one("#detail-error", Static).update(view.error or "—")
        table = self.query_one("#detail-attempts", DataTable)
        table.clear()
        for attempt in view.history:
            table.add_row(
                str(attempt.number),
                attempt.outcome,
                attempt.category,
                _took(attempt.duration),
                Text(attempt.error.replace("\n", " "), no_wrap=True, overflow="ellipsis"),
            )
        self._set_retry_enabled()

    def _show_title(self, view: ItemView) -> None:
        title = Text.assemble(
            ("item ", "dim"),
            (view.item_id, "bold"),
            ("  ·  ", "dim"),
            (view.status, "bold"),
            ("  ·  ", "dim"),
            calls_text(view),
            no_wrap=True,
            overflow="ellipsis",
        )
        if view.error_category:
            title.append(f"  ·  {view.error_category}", "dim")
        self.query_one("#detail-title", Static).update(title)

    def can_retry(self) -> bool:
        """True when this item's last outcome is a failure and it was not just sent again."""
        if self.read_only or self._sent or self.view is None:
            return False
        return (
            self.view.status == "failed"
            and self.reader.allowed.retry
            and self.item_id in self.reader.model.state.failed_items
        )

    def _set_retry_enabled(self) -> None:
        if not self.read_only:
            self.query_one("#detail-retry", Button).disabled = not self.can_retry()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Retry only when it makes sense (hidden in watch mode)."""
        if action == "retry":
            if self.read_only:
                return False
            return True if self.can_retry() or self._sent else None
        if action == "replay":
            if self.read_only:
                return False
            return True if self.can_replay() else None
        if action == "attempts":
            return True if self.record is not None else None
        return True

    def can_replay(self) -> bool:
        """True when the item has an outcome, the run takes commands and it was not just sent."""
        if self.read_only or self._sent or self.view is None:
            return False
        return self.view.status in ("succeeded", "failed") and self.reader.allowed.retry

    def action_attempts(self) -> None:
        """Open the attempt inspector on this item (``a``)."""
        if self.record is not None:
            settings = self.reader.model.state.settings
            self.app.push_screen(AttemptsScreen(self.item_id, self.record, settings))

    def action_replay(self) -> None:
        """Edit the prompt and parameters, then send the item again as a new attempt (``e``)."""
        view = self.view
        if view is None or not self.can_replay():
            return
        settings = dict(self.reader.model.state.settings)
        succeeded = view.status == "succeeded"

        def sent(edit: ReplayEdit | None) -> None:
            if edit is None or not self.can_replay():
                return
            self.post_message(
                ReplayRequested(self.item_id, edit.prompt, edit.options, succeeded=succeeded)
            )
            self._sent, self._sent_as = True, "replay"
            self._followed = None
            view.status = "replay queued"
            self._show_title(view)
            self._set_retry_enabled()

        self.app.push_screen(ReplayScreen(self.item_id, view.prompt, settings), sent)

    def action_step(self, step: int) -> None:
        """Show the previous (-1) or next (1) item of the dashboard's table."""
        other = self.reader.neighbour_item(self.item_id, step)
        if other is None:
            self.notify("no more items that way", timeout=2)
            return
        self.item_id = other
        self.view = None
        self.record = None
        self._sent = False
        self._followed = None
        self.query_one("#detail-title", Static).update(Text(f"item {other}  loading…"))
        self._set_retry_enabled()
        self.load()

    def action_copy(self, what: str) -> None:
        """Copy the error (the output when there is no error) or the prompt."""
        view = self.view
        if view is None:
            return
        if what == "prompt":
            text, name = view.prompt, "prompt"
        elif view.error:
            text, name = view.error, "error"
        else:
            text, name = view.output, "output"
        self.post_message(CopyRequested(text, f"{view.item_id}'s {name}"))

    def action_close(self) -> None:
        """Back to the dashboard."""
        self.dismiss()

    def action_retry(self) -> None:
        """Send this item again (said, not silently ignored, when it was sent already)."""
        if self._sent:
            self.notify(f"{self.item_id} was sent again already: its outcome shows here", timeout=3)
            return
        if self.can_retry():
            self.post_message(RetryRequested((self.item_id,)))
            self._sent, self._sent_as = True, "retry"
            self._followed = None
            if self.view is not None:
                self.view.status = "retry queued"
                self._show_title(self.view)
            self._set_retry_enabled()

    def palette_commands(self) -> list[PaletteCommand]:
        """Retry this item (when it can be), and back to the dashboard."""
        commands = []
        if self.can_retry():
            commands.append(
                PaletteCommand(f"Retry {self.item_id}", "Send this item again", self.action_retry)
            )
        commands.append(
            PaletteCommand("Back to the dashboard", "Close this screen", self.action_close)
        )
        return commands

    @on(Button.Pressed, "#detail-retry")
    def _retry_pressed(self) -> None:
        self.action_retry()

    @on(Button.Pressed, "#detail-back")
    def _back_pressed(self) -> None:
        self.dismiss()
