"""The event log: what happened to the run besides items finishing (rounds, cooldowns,
operator actions, store trouble), newest last, with the time of each."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ..state import LogEntry, RunState

#: Entries shown (the state keeps a few hundred; the screen needs the latest).
SHOWN_ENTRIES = 200
#: The colour of each kind of entry (theme variables; an unknown kind is not coloured).
KIND_VARIABLES = {
    "run": "status-running",
    "limits": "status-cooldown",
    "operator": "status-retry",
    "store": "status-failed",
}


def log_text(entries: list[LogEntry], colors: dict[str, str]) -> Text:
    """One line per entry: ``14:02:05 limits  429: every worker waits 30s ...``."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for index, entry in enumerate(entries):
        if index:
            text.append("\n")
        text.append(time.strftime("%H:%M:%S ", time.localtime(entry.at)), "dim")
        text.append(f"{entry.kind:<8} ", colors.get(entry.kind, ""))
        text.append(entry.text)
    if not entries:
        text.append("nothing yet: rounds, cooldowns and your actions show here", "dim")
    return text


class EventLog(VerticalScroll):
    """The log panel (``l`` on the dashboard shows it in place of the failed items)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Event log"
        self._body = Static(id="log-body")
        self._shown = -1

    def compose(self) -> ComposeResult:
        yield self._body

    def show(self, state: RunState, *, force: bool = False) -> None:
        """Redraw when the log has new entries (and follow the end)."""
        if state.log_version == self._shown and not force:
            return
        self._shown = state.log_version
        entries = list(state.log)[-SHOWN_ENTRIES:]
        variables = self.app.theme_variables
        colors = {kind: variables.get(name, "") for kind, name in KIND_VARIABLES.items()}
        self._body.update(log_text(entries, colors))
        self.border_title = f"Event log ({len(state.log):,})"
        self.scroll_end(animate=False)
