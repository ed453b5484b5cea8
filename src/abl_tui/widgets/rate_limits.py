"""Rate limits: the live cooldown countdown, the number of 429s, and the pacing in force."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from .. import formatting as fmt
from ..state import RunState


def cooldown_text(state: RunState, now: float) -> Text:
    """``cooldown 12.3s`` while one is in force, else ``no cooldown``."""
    remaining = state.cooldown_remaining(now)
    if remaining > 0:
        return Text(f"cooldown {remaining:.1f}s", style="bold")
    return Text("no cooldown", style="dim")


def pacing_text(state: RunState) -> str:
    """The request and token pacing limits, or ``no pacing``."""
    parts = []
    if state.rpm_limit:
        parts.append(f"rpm {fmt.count(state.rpm_limit)}")
    if state.tpm_limit:
        parts.append(f"tpm {fmt.count(state.tpm_limit)}")
    return " · ".join(parts) if parts else "no pacing"


def holding_back(state: RunState, now: float) -> str:
    """What keeps the sent rate under the pacing limit now, in a word or two ("" if nothing
    does, or it cannot be told)."""
    if state.finished:
        return "run ended"
    if state.paused:
        return "paused"
    if state.cooldown_remaining(now) > 0:
        return "cooldown"
    if state.capacity and state.in_flight >= state.capacity:
        return "workers full"
    return ""


def sent_text(state: RunState, now: float) -> Text:
    """``sent 126/min · workers full``: the requests the pacing limit let through, and why
    it falls short (empty in watch mode, which sees no attempts start)."""
    rpm = state.requests_per_minute(now)
    line = Text(no_wrap=True, overflow="ellipsis")
    if rpm <= 0 and state.read_only:
        return line
    line.append("sent ", "dim")
    line.append(f"{fmt.count(rpm)}/min", "bold")
    if state.rpm_limit:  # the limit is on the line above: say why it is not reached
        why = holding_back(state, now)
        if why and rpm < 0.95 * state.rpm_limit:
            line.append(f" · {why}", "dim")
    return line


def limits_line(state: RunState, now: float) -> Text:
    """Everything about limits on one line (the narrow layout's version of the panel)."""
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append("429s ", "dim")
    line.append(f"{state.rate_limits:,}", "bold")
    line.append("  ")
    line.append_text(cooldown_text(state, now))
    line.append("  ")
    rpm = state.requests_per_minute(now)
    if state.rpm_limit and rpm > 0:  # what pacing let through, against its limit
        line.append(f"rpm {fmt.count(rpm)}/{fmt.count(state.rpm_limit)}", "dim")
        if state.tpm_limit:
            line.append(f" · tpm {fmt.count(state.tpm_limit)}", "dim")
    else:
        line.append(pacing_text(state), "dim")
    return line


class RateLimitsPanel(Static):
    """The bordered rate-limit panel of wider layouts; a cooldown turns it the cooldown colour."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Rate limits"
        self._shown: tuple[object, ...] = ()

    def show(self, state: RunState, now: float) -> None:
        """Redraw from the state (only what changed)."""
        cooldown = cooldown_text(state, now)
        streak = f" (streak {state.cooldown_consecutive})" if state.cooldown_until else ""
        lines = Text("\n").join(
            [
                cooldown,
                Text.assemble(("429s ", "dim"), (f"{state.rate_limits:,}", "bold"), streak),
                Text(pacing_text(state), style="dim"),
                sent_text(state, now),
            ]
        )
        key = (lines.plain,)
        if key == self._shown:
            return
        self._shown = key
        self.set_class(state.cooldown_remaining(now) > 0, "-cooldown")
        self.update(lines, layout=False)  # always four lines in a panel of fixed size
