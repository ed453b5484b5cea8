"""``?``: every key of the dashboard, by screen, and what the less obvious numbers mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

#: (section, [(keys, what they do)]), in the order shown.
KEYS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Dashboard",
        [
            ("r", "retry the highlighted failed item"),
            ("R", "retry every failed item shown (one category when c picked one); asks first"),
            ("c", "next error category: show (and retry) one group of failures at a time"),
            ("f", "failed → retried → all: what the table lists"),
            ("s  S", "sort by the next column / reverse (or click a column's header)"),
            ("/  esc", "search by id, category or message; esc clears the search"),
            ("y", "copy the highlighted item's full error"),
            ("enter", "open the highlighted item: prompt, context, output, error, attempts"),
            ("l", "event log: rounds, cooldowns, your actions, store trouble"),
            ("p", "pause / resume dispatch (attempts under way finish)"),
            ("+ -", "one worker more / fewer"),
            ("L", "live controls: workers, requests/min, tokens/min, cost limit"),
            ("b", "cost limit: dispatch stops when spent + under way reaches it"),
            ("d", "drain: calls under way finish, nothing new starts, the run ends resumable"),
            ("u", "runs in the store: resume one, or retry its failed items"),
        ],
    ),
    (
        "Moving",
        [
            ("↑ ↓  j k", "previous / next row"),
            ("g G", "first / last row"),
            ("pgup pgdn", "a page up / down"),
        ],
    ),
    (
        "Item detail",
        [
            ("r", "retry this item (then follow its new attempts here)"),
            ("a", "attempt inspector: each attempt's request, answer or error, limits"),
            ("e", "edit the prompt / max_tokens / temperature and replay (live runs)"),
            ("[ ]", "previous / next item of the table"),
            ("y  Y", "copy the error (or output) / the prompt"),
            ("esc", "back to the dashboard"),
        ],
    ),
    (
        "Runs",
        [
            ("o  enter", "resume the highlighted run"),
            ("f", "resume it, retrying its failed items too"),
            ("ctrl+r", "read the list again (it also refreshes by itself)"),
            ("s  S", "sort by the next column / reverse (or click a column's header)"),
        ],
    ),
    (
        "Everywhere",
        [
            ("?", "this help"),
            ("ctrl+p", "command palette: every action possible now, by name"),
            ("q  ctrl+c", "quit; a run still going is interrupted resumably (asks first)"),
        ],
    ),
]

NOTES = [
    "calls: every call made for the item, in every round. Rate-limited calls (429) do not "
    "use up max_attempts, so an item can show more calls than max_attempts.",
    "busy: workers holding an item, calling the provider or waiting to retry it.",
    "sent: requests started in the last minute against the rpm pacing limit, and what holds "
    "it back (workers full, a cooldown, a pause).",
    "eta: from the last seconds' rate, paused seconds left out.",
]


def help_table() -> Table:
    """The keys as a two-column table with a heading row per section."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for index, (section, keys) in enumerate(KEYS):
        if index:
            table.add_row("", "")
        table.add_row(Text(section, style="bold underline"), "")
        for key, what in keys:
            table.add_row(key, what)
    return table


class HelpScreen(ModalScreen[None]):
    """The keys by screen; Esc, q or ? closes it."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="abl.help.close"),
        Binding("question_mark", "close", "Close", show=False, id="abl.help.toggle"),
        Binding("q", "close", "Close", show=False, id="abl.help.q"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(Text("Keys", style="bold"), id="help-title")
            yield Static(help_table(), id="help-keys")
            yield Static(Text("\n".join(f"• {note}" for note in NOTES)), id="help-notes")

    def action_close(self) -> None:
        """Back to where help was opened."""
        self.dismiss()
