"""Rate limits: the live cooldown countdown, the number of 429s, the pacing in force, and
what the provider declared of its limits (the budget left and when it is full again)."""

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
    """The request and token pacing in force (configured, or learned from the provider), or
    ``no pacing``."""
    rpm, tpm = state.pace()
    parts = []
    if rpm:
        parts.append(f"rpm {fmt.count(rpm)}")
    if tpm:
        parts.append(f"tpm {fmt.count(tpm)}")
    return " · ".join(parts) if parts else "no pacing"


def budget_text(
    unit: str, limit: float | None, left: float | None, reset: float | None
) -> Text | None:
    """``req 312/500 · reset 12s``: a declared budget left, and when it is full again (None
    when the provider declared nothing of it)."""
    if limit is None and left is None:
        return None
    line = Text(f"{unit} ", style="dim", no_wrap=True, overflow="ellipsis")
    line.append(fmt.count(left) if left is not None else "?", "bold")
    line.append(f"/{fmt.count(limit)}" if limit is not None else "", "dim")
    if reset is not None:
        line.append(f" · reset {fmt.duration(reset)}", "dim")
    return line


def declared_lines(state: RunState, now: float) -> list[Text]:
    """The provider's request and token budgets, one line each (none until it declared any)."""
    learned = state.learned
    if learned is None:
        return []
    lines = [
        budget_text(
            "req",
            learned.requests_limit,
            learned.requests_remaining,
            learned.reset_in(learned.requests_reset_s, now),
        ),
        budget_text(
            "tok",
            learned.tokens_limit,
            learned.tokens_remaining,
            learned.reset_in(learned.tokens_reset_s, now),
        ),
    ]
    return [line for line in lines if line is not None]


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
    pace_rpm = state.pace()[0]
    if pace_rpm:  # the limit is on the line above: say why it is not reached
        why = holding_back(state, now)
        if why and rpm < 0.95 * pace_rpm:
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
    pace_rpm, pace_tpm = state.pace()
    learned = state.learned
    if not (pace_rpm and rpm > 0):
        line.append(pacing_text(state), "dim")
        return line
    # what pacing let through against its limit, then what the provider says is left
    line.append(f"rpm {fmt.count(rpm)}/{fmt.count(pace_rpm)}", "dim")
    if learned is not None and learned.requests_remaining is not None:
        line.append(f" · {fmt.count(learned.requests_remaining)} left", "dim")
    if pace_tpm:
        line.append(f" · tpm {fmt.count(pace_tpm)}", "dim")
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
                *declared_lines(state, now),
            ]
        )
        key = (lines.plain,)
        if key == self._shown:
            return
        self._shown = key
        # the title says when the pace and the budgets are the provider's declaration
        self.border_title = "Rate limits" if state.learned is None else "Rate limits · learned"
        self.set_class(state.cooldown_remaining(now) > 0, "-cooldown")
        self.update(lines, layout=False)  # four to six lines in a panel of fixed size
