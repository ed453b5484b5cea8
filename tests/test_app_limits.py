"""Limits learned from the provider (issue 10, item 4): folded into the state, shown in the
rate-limit panel (the inline line when narrow) and logged when they change."""

from __future__ import annotations

from textual.widgets import Static

from abl_tui.app import DashboardApp
from abl_tui.state import RunState
from app_support import (
    NOW,
    demo_runner,
    frozen_clock,
    learned_limits_script,
    limits_learned,
    settle,
)


def test_the_state_keeps_the_last_declaration_and_logs_only_changes() -> None:
    state = RunState(rpm_limit=600.0)
    assert state.pace() == (600.0, None) and state.learned is None
    name, data, at = limits_learned(NOW, 499, 29_700)
    state.apply(name, data, at)
    state.apply(*limits_learned(NOW + 1, 312, 28_100))
    learned = state.learned
    assert learned is not None
    assert (learned.requests_remaining, learned.tokens_remaining) == (312, 28_100)
    assert state.pace() == (500.0, 30_000.0)
    assert learned.reset_in(learned.requests_reset_s, NOW + 5) == 8.0
    lines = [entry.text for entry in state.log]
    assert lines == ["provider declares 500 requests, 30,000 tokens: pacing rpm 500, tpm 30,000"]
    state.apply("limits_learned", {**data, "requests_limit": 1_000, "rpm": 600.0}, NOW + 2)
    assert len(state.log) == 2 and "1,000 requests" in state.log[-1].text
    assert state.log[-1].kind == "limits"


async def test_the_panel_shows_the_learned_pace_and_the_budget_left() -> None:
    app = DashboardApp(demo_runner(script=learned_limits_script()), clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        panel = str(app.main.query_one("#limits", Static).render())
        assert (
            "rpm 500 · tpm 30k" in panel
            and app.main.query_one("#limits").border_title == "Rate limits · learned"
        )
        assert "req 312/500 · reset 12s" in panel  # declared 0.5 s ago, resets 12 s after
        assert "tok 28.1k/30k · reset 4s" in panel
        await pilot.press("l")
        await pilot.pause()
        log = str(app.main.query_one("#log-body", Static).render())
        assert log.count("provider declares 500 requests") == 1


async def test_the_narrow_line_says_the_requests_left() -> None:
    app = DashboardApp(demo_runner(script=learned_limits_script()), clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        inline = str(app.main.query_one("#limits-inline", Static).render())
        assert "rpm 60/500 · 312 left" in inline  # before tpm: cut last when narrow
