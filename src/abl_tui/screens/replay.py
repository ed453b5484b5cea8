"""Replay one item with an edited prompt and parameters, as a new attempt (``e`` on the item's
screen, live runs only). The item keeps its original prompt; the new attempt records what it
sent. Ctrl+S sends, Esc leaves everything as it was; a bad number is named and nothing sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea


@dataclass(frozen=True, slots=True)
class ReplayEdit:
    """What the modal sends: the prompt and the options that differ from the run's."""

    prompt: str
    options: dict[str, Any]


def parse_options(max_tokens: str, temperature: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The options whose fields differ from the run's ``settings``; ``ValueError`` naming a
    bad field (empty: the run's own value)."""
    options: dict[str, Any] = {}
    text = max_tokens.strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"max_tokens: a whole number >= 1, got {text!r}")
        if int(text) != settings.get("max_tokens"):
            options["max_tokens"] = int(text)
    text = temperature.strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"temperature: a number from 0 to 2, got {text!r}") from None
        if not (math.isfinite(value) and 0 <= value <= 2):
            raise ValueError(f"temperature: a number from 0 to 2, got {text!r}")
        if value != settings.get("temperature"):
            options["temperature"] = value
    return options


def _shown(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


class ReplayScreen(ModalScreen[ReplayEdit | None]):
    """The prompt in a text area, max_tokens and temperature below it."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="abl.replay.cancel"),
        Binding("ctrl+s", "send", "Replay", id="abl.replay.send"),
    ]
    DEFAULT_CSS = """
    ReplayScreen { align: center middle; }
    ReplayScreen #replay-box {
        width: 90%; max-width: 100; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    ReplayScreen #replay-prompt { height: 8; }
    ReplayScreen .replay-row { height: 1; margin: 1 0 0 0; }
    ReplayScreen #replay-prompt { margin: 0 0 0 0; }
    ReplayScreen .replay-row Label { width: 13; }
    ReplayScreen .replay-row Input { width: 14; border: none; height: 1; padding: 0 1; }
    ReplayScreen #replay-problem { color: $error; height: auto; }
    ReplayScreen #replay-buttons { height: 1; margin: 1 0 0 0; }
    ReplayScreen #replay-buttons Button { margin: 0 2 0 0; }
    ReplayScreen #replay-keys { color: $text-muted; width: 1fr; }
    """

    def __init__(self, item_id: str, prompt: str, settings: dict[str, Any]) -> None:
        super().__init__()
        self.item_id = item_id
        self.prompt = prompt
        self.settings = settings

    def compose(self) -> ComposeResult:
        with Vertical(id="replay-box"):
            yield Static(f"Replay {self.item_id} as a new attempt (the original is kept)")
            yield TextArea(self.prompt, id="replay-prompt", soft_wrap=True)
            with Horizontal(classes="replay-row"):
                yield Label("max_tokens")
                yield Input(
                    _shown(self.settings.get("max_tokens")),
                    placeholder="run's",
                    id="replay-max-tokens",
                )
                yield Label("  temperature")
                yield Input(
                    _shown(self.settings.get("temperature")),
                    placeholder="run's",
                    id="replay-temperature",
                )
            yield Static("", id="replay-problem")
            with Horizontal(id="replay-buttons"):
                yield Button("Replay", id="replay-send", variant="primary", compact=True)
                yield Button("Cancel", id="replay-cancel", compact=True)
                yield Static("ctrl+s replay · esc cancel", id="replay-keys")

    def on_mount(self) -> None:
        self.query_one("#replay-prompt", TextArea).focus()

    def action_send(self) -> None:
        """Send the edit, unless a field is wrong (then say which)."""
        prompt = self.query_one("#replay-prompt", TextArea).text
        if not prompt.strip():
            self.query_one("#replay-problem", Static).update("the prompt is empty")
            return
        try:
            options = parse_options(
                self.query_one("#replay-max-tokens", Input).value,
                self.query_one("#replay-temperature", Input).value,
                self.settings,
            )
        except ValueError as exc:
            self.query_one("#replay-problem", Static).update(str(exc))
            return
        self.dismiss(ReplayEdit(prompt, options))

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#replay-send")
    def _send_pressed(self) -> None:
        self.action_send()

    @on(Button.Pressed, "#replay-cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)
