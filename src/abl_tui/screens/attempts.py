"""The attempt inspector: one row per attempt of an item, and for the highlighted one what it
sent (model, parameters, prompt), what came back (the answer or the error, with its HTTP
status) and the rate limits the provider declared on it. Opened with ``a`` on the item's
screen; read-only, so watch mode offers it too. Never shows a key: the store keeps none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from .. import formatting as fmt
from ..attempt_request import request_parameters
from ..palette import PaletteCommand, ScreenCommands


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a store record or of a mapping (tests hand in either)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


@dataclass(frozen=True, slots=True)
class AttemptFacts:
    """One attempt as the inspector shows it."""

    number: int
    outcome: str
    status: int | None
    category: str
    started_at: float | None
    duration: float | None
    wait: float | None
    error: str
    rate_limits: dict[str, Any] | None
    prompt: str | None  # a replay's own prompt (None: the item's)
    parameters: dict[str, Any] | None  # a replay's own parameters (None: the run's)

    @classmethod
    def from_row(cls, row: Any, index: int) -> AttemptFacts:
        """Read a store attempt record (or a mapping of its fields) defensively."""
        limits, parameters = _get(row, "rate_limits"), _get(row, "parameters")
        status = _get(row, "status")
        return cls(
            number=int(_get(row, "attempt", index + 1) or index + 1),
            outcome=str(_get(row, "outcome") or "under way"),
            status=status if isinstance(status, int) else None,
            category=str(_get(row, "error_category") or ""),
            started_at=_get(row, "started_at"),
            duration=_get(row, "duration"),
            wait=_get(row, "wait"),
            error=str(_get(row, "error") or ""),
            rate_limits=dict(limits) if isinstance(limits, Mapping) else None,
            prompt=_get(row, "prompt"),
            parameters=dict(parameters) if isinstance(parameters, Mapping) else None,
        )


@dataclass
class InspectedItem:
    """An item's attempts and what the inspector needs besides them."""

    item_id: str
    prompt: str = ""
    output: str = ""
    status: str = ""
    attempts: list[AttemptFacts] = field(default_factory=list)

    @classmethod
    def from_record(cls, item_id: str, record: Any) -> InspectedItem:
        rows = _get(record, "history") or []
        output = _get(record, "output")
        return cls(
            item_id=item_id,
            prompt=str(_get(record, "prompt") or ""),
            output="" if output is None else str(output),
            status=str(_get(record, "status") or ""),
            attempts=[AttemptFacts.from_row(row, index) for index, row in enumerate(rows)],
        )

    def last_success(self) -> int | None:
        """The number of the attempt whose answer is the item's output now."""
        if self.status != "succeeded":
            return None
        numbers = [a.number for a in self.attempts if a.outcome == "ok"]
        return numbers[-1] if numbers else None


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if 0 <= value < 10:
        return f"{value:.2f}s"
    return fmt.duration(value)


def _offset(started: float | None, first: float | None) -> str:
    """When an attempt started, counted from the item's first attempt (``+1.25s``)."""
    if started is None or first is None:
        return "—"
    return "+" + _seconds(max(started - first, 0.0))


def limits_lines(limits: dict[str, Any] | None) -> list[str]:
    """``requests  limit 60  remaining 0  reset 2.50s`` and the same for tokens."""
    if not limits:
        return ["the provider declared none on this attempt"]
    lines = []
    for budget in ("requests", "tokens"):
        limit, left = limits.get(f"{budget}_limit"), limits.get(f"{budget}_remaining")
        reset = limits.get(f"{budget}_reset_s")
        if limit is None and left is None and reset is None:
            continue
        said = [f"{budget:<8}"]
        said.append(f"limit {'—' if limit is None else f'{limit:,}'}")
        said.append(f"remaining {'—' if left is None else f'{left:,}'}")
        said.append(f"reset {_seconds(reset)}")
        lines.append("  ".join(said))
    return lines


def parameters_lines(parameters: Mapping[str, Any]) -> list[str]:
    """One ``name  value`` line per parameter, names aligned."""
    if not parameters:
        return ["(the run's settings name none)"]
    width = max(len(name) for name in parameters)
    return [f"{name:<{width}}  {value}" for name, value in parameters.items()]


class AttemptsScreen(Screen[None]):
    """Every attempt of one item; Esc goes back to the item."""

    COMMANDS = {ScreenCommands}
    BINDINGS = [
        Binding("escape", "close", "Back", id="abl.attempts.back"),
        Binding("j", "cursor(1)", "Down", show=False, id="abl.attempts.down"),
        Binding("k", "cursor(-1)", "Up", show=False, id="abl.attempts.up"),
    ]
    DEFAULT_CSS = """
    AttemptsScreen #attempts-title { height: 1; background: $panel; padding: 0 1; }
    AttemptsScreen #attempts-table { height: auto; max-height: 8; }
    AttemptsScreen #attempt-body { height: 1fr; padding: 0 1; }
    AttemptsScreen .attempt-heading { color: $primary; text-style: bold; margin: 1 0 0 0; }
    AttemptsScreen .attempt-text { padding: 0 0 0 2; }
    AttemptsScreen #attempt-error { color: $status-failed; }
    """

    def __init__(self, item_id: str, record: Any, settings: Mapping[str, Any]) -> None:
        super().__init__()
        self.item = InspectedItem.from_record(item_id, record)
        self.settings = dict(settings)
        self.shown: AttemptFacts | None = None

    def compose(self) -> ComposeResult:
        count = len(self.item.attempts)
        title = Text.assemble(
            ("item ", "dim"),
            (self.item.item_id, "bold"),
            ("  ·  ", "dim"),
            f"{count} attempt{'s' if count != 1 else ''}",
            no_wrap=True,
            overflow="ellipsis",
        )
        yield Static(title, id="attempts-title")
        yield DataTable(id="attempts-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="attempt-body"):
            yield Static("Request", classes="attempt-heading", id="request-heading")
            yield Static(id="attempt-request", classes="attempt-text", markup=False)
            yield Static("Prompt", classes="attempt-heading", id="prompt-heading")
            yield Static(id="attempt-prompt", classes="attempt-text", markup=False)
            yield Static("Answer", classes="attempt-heading", id="answer-heading")
            yield Static(id="attempt-answer", classes="attempt-text", markup=False)
            yield Static(id="attempt-error", classes="attempt-text", markup=False)
            yield Static("Rate limits", classes="attempt-heading")
            yield Static(id="attempt-limits", classes="attempt-text", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#attempts-table", DataTable)
        for label, key, width in (
            ("#", "n", 3),
            ("outcome", "outcome", 12),
            ("status", "status", 6),
            ("category", "category", 16),
            ("started", "started", 8),
            ("took", "took", 7),
            ("wait", "wait", 6),
        ):
            table.add_column(label, key=key, width=width)
        first = next((a.started_at for a in self.item.attempts if a.started_at is not None), None)
        for attempt in self.item.attempts:
            table.add_row(
                str(attempt.number),
                attempt.outcome,
                "—" if attempt.status is None else str(attempt.status),
                Text(attempt.category, no_wrap=True, overflow="ellipsis"),
                _offset(attempt.started_at, first),
                _seconds(attempt.duration),
                "—" if attempt.wait is None else _seconds(attempt.wait),
                key=str(attempt.number),
            )
        if self.item.attempts:
            table.move_cursor(row=len(self.item.attempts) - 1)
            self.show(self.item.attempts[-1])
        else:
            self.query_one("#attempt-request", Static).update("no attempt recorded yet")
        table.focus()

    @on(DataTable.RowHighlighted, "#attempts-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.item.attempts):
            self.show(self.item.attempts[event.cursor_row])

    def show(self, attempt: AttemptFacts) -> None:
        """Fill the lower half with what ``attempt`` sent and got back."""
        self.shown = attempt
        parameters = attempt.parameters or request_parameters(self.settings)
        source = "this replay's own" if attempt.parameters else "the run's settings"
        lines = [f"attempt {attempt.number} · parameters: {source}", *parameters_lines(parameters)]
        self.query_one("#attempt-request", Static).update("\n".join(lines))
        prompt = attempt.prompt if attempt.prompt is not None else self.item.prompt
        heading = "Prompt (edited for this replay)" if attempt.prompt is not None else "Prompt"
        self.query_one("#prompt-heading", Static).update(heading)
        self.query_one("#attempt-prompt", Static).update(prompt or "—")
        self._show_outcome(attempt)
        self.query_one("#attempt-limits", Static).update(
            "\n".join(limits_lines(attempt.rate_limits))
        )

    def _show_outcome(self, attempt: AttemptFacts) -> None:
        """The answer of a successful attempt, or the error of a failed one, with its status."""
        status = "" if attempt.status is None else f"HTTP {attempt.status} · "
        answer, error = self.query_one("#attempt-answer", Static), self.query_one("#attempt-error")
        heading = self.query_one("#answer-heading", Static)
        failed = attempt.outcome not in ("ok", "under way")
        error.display = failed
        answer.display = not failed
        if failed:
            heading.update(f"Error ({status}{attempt.outcome})")
            assert isinstance(error, Static)
            error.update(attempt.error or "—")
        elif attempt.outcome == "ok" and attempt.number == self.item.last_success():
            heading.update("Answer (the item's output)")
            answer.update(self.item.output or "—")
        elif attempt.outcome == "ok":
            heading.update("Answer")
            answer.update("not kept: a later attempt's answer replaced it")
        else:
            heading.update("Answer")
            answer.update("the attempt is under way")

    def action_cursor(self, step: int) -> None:
        table = self.query_one("#attempts-table", DataTable)
        table.move_cursor(row=table.cursor_row + step)

    def action_close(self) -> None:
        """Back to the item."""
        self.dismiss()

    def palette_commands(self) -> list[PaletteCommand]:
        return [
            PaletteCommand("Back to the item", "Close the attempt inspector", self.action_close)
        ]
