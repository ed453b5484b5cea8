"""Progress: a bar, done/total, elapsed and ETA."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static

from .. import formatting as fmt
from ..model import RunModel


def eta_text(model: RunModel, now: float) -> str:
    """``eta 3m 10s``; ``eta paused`` while paused; ``done`` once nothing is left; ``eta --``
    when it cannot be told (no rate yet, or the run stopped with items left)."""
    state = model.state
    if state.remaining == 0 and state.total:
        return "done"
    if model.active and state.paused:
        return "eta paused"
    eta = state.eta_seconds(now) if model.active else None
    return f"eta {fmt.duration(eta)}"


class RunProgress(Horizontal):
    """One line: ``[bar] 1,234/5,000 24.7%  elapsed 1m 05s  eta 3m 10s``."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple[object, ...] = ()
        self._bar = ProgressBar(total=1, show_eta=False, show_percentage=False, id="progress-bar")
        self._text = Static(id="progress-text")

    def compose(self) -> ComposeResult:
        yield self._bar
        yield self._text

    def show(self, model: RunModel, now: float) -> None:
        """Redraw from the model (only what changed)."""
        state = model.state
        text = (
            f"{state.done:,}/{state.total:,} {fmt.percent(state.progress())}  "
            f"elapsed {fmt.duration(state.elapsed(now))}  {eta_text(model, now)}"
        )
        key = (state.done, state.total, text)
        if key == self._shown:
            return
        self._shown = key
        self._bar.update(total=max(state.total, 1), progress=state.done)
        self._text.update(text, layout=False)  # one line, sized by the layout
