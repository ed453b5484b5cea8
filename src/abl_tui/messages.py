"""What the screens ask of the app, as typed messages, and what they may read of the run.

Attributes go down, messages go up: the app hands each screen a :class:`RunReader` (the
model, what can be done now, the store's records) and the screens post these messages
for the app to carry out (it owns the feed, the confirmations and the notifications).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from textual.message import Message

from .model import RunModel


@dataclass(frozen=True, slots=True)
class Allowed:
    """What the operator can ask of the run right now (nothing, in watch mode)."""

    retry: bool = False  # failed items can be sent again
    pause: bool = False  # pausing (or resuming) dispatch means something now
    paused: bool = False  # dispatch is paused: the key resumes
    controls: bool = False  # workers, pacing and the budget can be changed
    drain: bool = False  # the run goes and is not draining already
    runs: bool = False  # another stored run can be opened


class RunReader(Protocol):
    """What a screen may read of the run (the app provides it)."""

    @property
    def model(self) -> RunModel:
        """The run as folded so far."""
        ...

    @property
    def clock(self) -> Callable[[], float]:
        """Wall-clock seconds (frozen in tests)."""
        ...

    @property
    def allowed(self) -> Allowed:
        """What the operator can ask now."""
        ...

    def neighbour_item(self, item_id: str, step: int) -> str | None:
        """The item ``step`` rows from ``item_id`` in the dashboard's table (None past the
        ends)."""
        ...

    async def load_item(self, item_id: str) -> Any:
        """An item's stored record with its attempts, or None."""

    async def load_runs(self) -> list[Any]:
        """Every stored run, newest first."""
        ...


class RetryRequested(Message):
    """Send these failed items again, now (``r``)."""

    def __init__(self, item_ids: tuple[str, ...]) -> None:
        super().__init__()
        self.item_ids = item_ids


class RetryAllRequested(Message):
    """Ask, then send every failed item again; with a ``category``, only ``item_ids``, the
    items of that category shown on the dashboard (``R``)."""

    def __init__(self, category: str = "", item_ids: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.category = category
        self.item_ids = item_ids


class ReplayRequested(Message):
    """Send one item again as a new attempt with an edited ``prompt`` and ``options``
    (``max_tokens``, ``temperature``; empty: the run's own) (``e`` on the item's screen)."""

    def __init__(
        self, item_id: str, prompt: str, options: dict[str, Any], *, succeeded: bool = False
    ) -> None:
        super().__init__()
        self.item_id = item_id
        self.prompt = prompt
        self.options = options
        self.succeeded = succeeded  # the item's last outcome was a success


class PauseRequested(Message):
    """Pause (``paused=True``) or resume dispatch (``p``)."""

    def __init__(self, paused: bool) -> None:
        super().__init__()
        self.paused = paused


class WorkersStepped(Message):
    """One worker more or fewer (``+``/``-``)."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step


class ControlsRequested(Message):
    """Open the live controls with the cursor on ``focus`` (``L``; ``b``: the cost limit)."""

    def __init__(self, focus: str = "workers") -> None:
        super().__init__()
        self.focus = focus


class DrainRequested(Message):
    """Ask, then let the calls under way finish and start nothing more (``d``)."""


class OpenItem(Message):
    """Show an item's detail screen (``enter``)."""

    def __init__(self, item_id: str) -> None:
        super().__init__()
        self.item_id = item_id


class RunsRequested(Message):
    """Show the stored runs (``u``)."""


class SwitchRunRequested(Message):
    """Leave this run for a stored one (asking first while this one goes)."""

    def __init__(self, run_id: str, *, retry_failed: bool) -> None:
        super().__init__()
        self.run_id = run_id
        self.retry_failed = retry_failed


class CopyRequested(Message):
    """Put ``text`` on the clipboard and say that ``what`` was copied (``y``)."""

    def __init__(self, text: str, what: str) -> None:
        super().__init__()
        self.text = text
        self.what = what
