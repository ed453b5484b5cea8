"""The live controls of a running run: workers, rpm, tpm and the cost limit, in one modal.

Each field shows the value in force; an empty rpm, tpm or cost field means "no limit".
Enter applies, Esc leaves everything as it was. A bad value is named under the fields and
nothing is applied until it is fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


@dataclass(frozen=True, slots=True)
class Controls:
    """The values the modal edits (None: no limit)."""

    workers: int
    rpm: float | None
    tpm: float | None
    max_cost: float | None


#: (field, label, placeholder) in the order shown.
FIELDS = (
    ("workers", "workers", "1 or more"),
    ("rpm", "requests/min", "empty: no limit"),
    ("tpm", "tokens/min", "empty: no limit"),
    ("max_cost", "max cost $", "empty: no limit"),
)


def _shown(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:g}"


def parse_controls(values: dict[str, str]) -> Controls:
    """The controls the fields say; ``ValueError`` naming the first bad field."""
    workers_text = values.get("workers", "").strip()
    if not workers_text.isdigit() or int(workers_text) < 1:
        raise ValueError(f"workers: a whole number >= 1, got {workers_text!r}")
    limits: dict[str, float | None] = {}
    for name, label, _ in FIELDS[1:]:
        text = values.get(name, "").strip().removeprefix("$")
        if not text:
            limits[name] = None
            continue
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{label}: a number, or empty for no limit, got {text!r}") from None
        if not (number > 0 and math.isfinite(number)):
            raise ValueError(f"{label}: must be > 0 (empty for no limit), got {text!r}")
        limits[name] = number
    return Controls(int(workers_text), limits["rpm"], limits["tpm"], limits["max_cost"])


class ControlsScreen(ModalScreen[Controls | None]):
    """Edit workers, rpm, tpm and the cost limit; dismisses with the new values or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="abl.controls.cancel")]

    def __init__(self, current: Controls, *, focus: str = "workers", note: str = "") -> None:
        super().__init__()
        self.current = current
        self._focus = focus
        self._note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="controls-box"):
            yield Static("Live controls", id="controls-title")
            for name, label, placeholder in FIELDS:
                with Horizontal(classes="controls-row"):
                    yield Label(label, classes="controls-label")
                    yield Input(
                        _shown(getattr(self.current, name)),
                        placeholder=placeholder,
                        id=f"controls-{name}",
                        compact=True,
                    )
            yield Static(self._note, id="controls-note", markup=False)
            yield Static("", id="controls-error", markup=False)
            with Horizontal(id="controls-buttons"):
                yield Button("Apply (enter)", id="controls-apply", variant="primary")
                yield Button("Cancel (esc)", id="controls-cancel")

    def on_mount(self) -> None:
        self.query_one(f"#controls-{self._focus}", Input).focus()

    def values(self) -> dict[str, str]:
        """What the fields hold now."""
        return {name: self.query_one(f"#controls-{name}", Input).value for name, _, _ in FIELDS}

    def action_apply(self) -> None:
        """Dismiss with the values, or name the bad one and stay."""
        try:
            controls = parse_controls(self.values())
        except ValueError as exc:
            self.query_one("#controls-error", Static).update(str(exc))
            return
        self.dismiss(controls)

    def action_cancel(self) -> None:
        """Leave everything as it was."""
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#controls-apply")
    def _apply_pressed(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#controls-cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)
