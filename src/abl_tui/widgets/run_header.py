"""The top line: which run this is, and a badge saying what it is doing."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from ..model import RunModel

#: Badge text and CSS class by run phase.
_BADGES = {
    "starting": ("◌ starting", "-running"),
    "running": ("● running", "-running"),
    "paused": ("⏸ paused", "-paused"),
    "budget": ("⏸ budget reached", "-cooldown"),
    "draining": ("◐ draining", "-paused"),
    "cooldown": ("◷ cooldown", "-cooldown"),
    "completed": ("✓ completed", "-ok"),
    "failed": ("✗ done with failures", "-failed"),
    "ended": ("■ ended", "-failed"),
    "interrupted": ("■ interrupted", "-paused"),
    "watching": ("◉ watching", "-watching"),
}


def phase(model: RunModel, now: float) -> str:
    """The one word the badge shows for the run's current phase."""
    state = model.state
    if not model.seeded:
        return "starting"
    if model.active and state.draining:
        return "draining"
    if model.active and state.budget_note:
        return "budget"
    if model.active and state.cooldown_remaining(now) > 0:
        return "cooldown"
    if model.active and state.paused:
        return "paused"
    if model.active:
        return "running"
    if state.status in ("completed", "failed", "interrupted"):
        return state.status
    if state.status == "cancelled":
        return "interrupted"
    if model.ended:
        return "ended"
    return "completed" if not state.failed else "failed"


class RunHeader(Horizontal):
    """Run name and id on the left (cut first when narrow), the model, then the phase badge
    (and "watching") on the right."""

    def __init__(self, *, read_only: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self._read_only = read_only
        self._shown: tuple[str, ...] = ()
        self._title = Static(id="run-title")
        self._model = Static(id="run-model")
        self._badge = Static(id="run-badge", classes="badge")

    def compose(self) -> ComposeResult:
        yield self._title
        yield self._model
        if self._read_only:
            yield Static(_BADGES["watching"][0], id="watch-badge", classes="badge -watching")
        yield self._badge

    def show(self, model: RunModel, now: float) -> None:
        """Redraw from the model (only what changed)."""
        state = model.state
        word = phase(model, now)
        key = (state.name, state.run_id, state.model, word)
        if key == self._shown:
            return
        self._shown = key
        title = Text.assemble(
            ("abl ", "bold"),
            (state.name or "…", "bold"),
            ("  ", ""),
            (state.run_id, "dim"),
            no_wrap=True,
            overflow="ellipsis",
        )
        self._title.update(title, layout=False)
        model_name = Text(
            state.model or "model ?", style="italic", no_wrap=True, overflow="ellipsis"
        )
        self._model.update(model_name)
        badge = self._badge
        label, css_class = _BADGES[word]
        badge.update(label)
        badge.set_classes(f"badge {css_class}")
