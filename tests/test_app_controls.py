"""Pilot tests of the operator's controls (issue 14, second half): the dashboard closing when
a signal stopped the run, the theme remembered, and the live controls of a running run."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from abl_tui import cli
from abl_tui.app import DashboardApp
from abl_tui.batchfile import BatchSpec
from abl_tui.preferences import Preferences, config_dir
from abl_tui.runner import Runner, RunPlan
from abl_tui.screens import ConfirmScreen, Controls, ControlsScreen
from abl_tui.screens.controls import parse_controls
from app_support import NOW, demo_runner, finished_script, frozen_clock, settle
from async_batch_llm.store import RunStore
from support import wait_for_thread


def make_app(**overrides: Any) -> DashboardApp:
    """The dashboard on the scripted demo run and the frozen clock."""
    return DashboardApp(demo_runner(**overrides), clock=frozen_clock)


# ---------------------------------------------------------------------- a signal ends it all


async def test_a_signal_that_stopped_the_run_closes_the_dashboard() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert not app._exit
        runner.cancel()  # what cli's SIGTERM handler does, from the main thread
        app.tick()
        assert app._exit  # the app leaves, so the process exits 143
        await pilot.pause()


async def test_a_run_that_ends_by_itself_keeps_the_dashboard_open() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        runner.done.set()  # finished, not cancelled: the operator reads the result
        app.tick()
        assert not app._exit and app.model.ended


# ---------------------------------------------------------------------- the theme is remembered


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XDG_CONFIG_HOME in a temporary folder (the user's own is never touched)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def test_preferences_live_in_the_xdg_config_folder(config_home: Path) -> None:
    assert config_dir() == config_home / "abl"
    preferences = Preferences()
    assert preferences.theme() is None
    preferences.save_theme("abl-light")
    saved = json.loads((config_home / "abl" / "preferences.json").read_text())
    assert saved == {"theme": "abl-light"}
    assert Preferences().theme() == "abl-light"


def test_a_broken_preferences_file_reads_as_nothing_saved(config_home: Path) -> None:
    path = config_home / "abl" / "preferences.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert Preferences().theme() is None
    Preferences().save_theme("abl-dark")  # and is replaced by the next save
    assert Preferences().theme() == "abl-dark"


def test_theme_flag_is_checked_saved_and_used_next_time(config_home: Path) -> None:
    assert cli._theme(argparse.Namespace(theme=None)) is None
    assert cli._theme(argparse.Namespace(theme="abl-light")) == "abl-light"
    assert cli._theme(argparse.Namespace(theme=None)) == "abl-light"  # the next start
    with pytest.raises(cli._UsageError, match=r"unknown theme 'no-such'.*abl-dark"):
        cli._theme(argparse.Namespace(theme="no-such"))
    assert Preferences().theme() == "abl-light"


def test_an_unknown_theme_exits_2_before_anything_runs(
    config_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a", "prompt": "hi"}\n')
    db = tmp_path / "runs.db"
    status = cli.main(["run", str(items), "--dry-run", "--db", str(db), "--theme", "nope"])
    assert status == cli.EXIT_USAGE
    assert "unknown theme 'nope'" in capsys.readouterr().err
    assert not db.exists()


async def test_a_theme_picked_in_the_dashboard_is_saved(config_home: Path) -> None:
    chosen: list[str] = []
    app = DashboardApp(
        demo_runner(), clock=frozen_clock, theme="abl-dark", on_theme_chosen=chosen.append
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.theme == "abl-dark"
        app.theme = "abl-light"  # what the palette's theme picker does
        await pilot.pause()
    assert chosen == ["abl-light"]


# ---------------------------------------------------------------------- live controls


async def test_plus_and_minus_change_the_workers() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.current_controls().workers == 4
        await pilot.press("plus", "plus", "minus")
        await pilot.pause()
        assert [c for c in runner.commands if c[0] == "set_workers"] == [
            ("set_workers", 5),
            ("set_workers", 6),
            ("set_workers", 5),
        ]
        assert app.model.state.log[-1].text == "workers set to 5"
        for _ in range(6):
            await pilot.press("minus")
        await pilot.pause()
        assert runner.commands[-1] == ("set_workers", 1)  # never fewer than one


async def test_the_controls_modal_sets_pacing_and_the_cost_limit() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("L")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ControlsScreen)
        assert screen.values() == {"workers": "4", "rpm": "600", "tpm": "", "max_cost": ""}
        screen.query_one("#controls-rpm", Input).value = "300"
        screen.query_one("#controls-tpm", Input).value = "90000"
        screen.query_one("#controls-max_cost", Input).value = "$0.50"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is app.main
        assert ("set_limits", 300.0, 90000.0) in runner.commands
        assert ("set_max_cost", 0.5) in runner.commands
        assert "set_workers" not in runner.names()  # unchanged: not sent
        state = app.model.state
        assert (state.rpm_limit, state.tpm_limit, state.max_cost) == (300.0, 90000.0, 0.5)
        assert "pacing rpm 300, tpm 90000: now" in [entry.text for entry in state.log]
        app.tick()
        await pilot.pause()
        assert "limit $0.5000" in str(app.main.query_one("#budget", Static).render())


async def test_pacing_the_engine_cannot_change_mid_round_says_so() -> None:
    runner = demo_runner(limits_live=False)
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("L")
        await pilot.pause()
        app.screen.query_one("#controls-rpm", Input).value = ""
        await pilot.press("enter")
        await pilot.pause()
        assert ("set_limits", None, None) in runner.commands
        last = app.model.state.log[-1].text
        assert last.startswith("pacing no rpm limit, no tpm limit: from")
        assert "next round" in app.model.state.log[-1].text


async def test_a_bad_value_is_named_and_nothing_is_applied() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("b")  # the same modal, on the cost field
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ControlsScreen)
        assert screen.focused is screen.query_one("#controls-max_cost", Input)
        screen.query_one("#controls-max_cost", Input).value = "-2"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen
        assert "max cost $: must be > 0" in str(screen.query_one("#controls-error").render())
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main
        assert not {"set_max_cost", "set_limits", "set_workers"} & set(runner.names())


def test_parse_controls() -> None:
    assert parse_controls({"workers": "8", "rpm": " 500 ", "tpm": "", "max_cost": "$1.5"}) == (
        Controls(8, 500.0, None, 1.5)
    )
    for bad in ({"workers": "0"}, {"workers": "2", "rpm": "fast"}, {"workers": "2", "tpm": "inf"}):
        with pytest.raises(ValueError):
            parse_controls(bad)


async def test_the_budget_holding_dispatch_is_shown_and_logged() -> None:
    runner = demo_runner(max_cost=0.01)
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        runner.budget_status = "budget $0.0100 reached: $0.0095 spent + ~$0.0008 under way"
        app.tick()
        await pilot.pause()
        assert "budget reached" in str(app.main.query_one("#run-badge", Static).render())
        assert "limit $0.0100 reached" in str(app.main.query_one("#budget", Static).render())
        assert app.model.state.log[-1].kind == "budget"
        assert any(n.title == "Budget reached" for n in app._notifications)
        await pilot.press("b")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ControlsScreen)
        assert "reached" in str(screen.query_one("#controls-note").render())
        screen.query_one("#controls-max_cost", Input).value = ""
        await pilot.press("enter")
        await pilot.pause()
        app.tick()
        assert runner.commands[-1] == ("set_max_cost", None)
        assert app.model.state.budget_note is None
        assert app.model.state.log[-1].text.startswith("the budget allows more")


async def test_drain_asks_then_drains_and_ends_interrupted() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert "drain" not in runner.names()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert runner.names()[-1] == "drain"
        app.tick()
        await pilot.pause()
        assert "draining" in str(app.main.query_one("#run-badge", Static).render())
        assert not app.allowed.drain  # once is enough
        runner.buffer.push([("batch_completed", {"cancelled": True}, NOW)])
        runner.draining = False
        runner.done.set()  # the runner ended the run: not a cancel, the app stays open
        app.tick()
        await pilot.pause()
        assert not app._exit
        assert app.model.state.status == "interrupted"
        assert "interrupted" in str(app.main.query_one("#run-badge", Static).render())


async def test_no_controls_on_a_finished_run() -> None:
    runner = demo_runner(script=finished_script())
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        runner.done.set()
        app.tick()
        await pilot.press("d", "L", "plus", "b")
        await pilot.pause()
        assert app.screen is app.main
        assert not {"drain", "set_workers", "set_limits"} & set(runner.names())


# ---------------------------------------------------------------------- the real runner


def write_items(path: Path, count: int, tag: str) -> Path:
    with path.open("w") as out:
        for number in range(count):
            out.write(json.dumps({"id": f"i{number:04d}", "prompt": f"{tag} say {number}"}) + "\n")
    return path


def test_drain_finishes_the_calls_under_way_and_ends_the_run_resumable(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl", 3_000, uuid.uuid4().hex)
    spec = BatchSpec(items=str(items), model="simulated/default", workers=4)
    plan = RunPlan(db_path=tmp_path / "runs.db", settings=spec, items_path=items, keep_open=True)
    runner = Runner(plan)
    runner.start()
    try:
        wait_for_thread(lambda: runner.flight.finished > 20, "the first answers")
        runner.drain()
        assert runner.join(60), "the drained run did not end"
    finally:
        if not runner.done.is_set():
            runner.cancel()
            runner.join(30)
    assert not runner.cancelled and runner.outcome.interrupted
    assert runner.outcome.status == "interrupted"
    assert not runner.flight.calling  # every call under way was let finish
    run = asyncio.run(_stored_run(plan.db_path))
    assert run.status == "interrupted" and run.note == "drained by the operator"
    assert 0 < run.succeeded < 3_000 and run.pending == 3_000 - run.succeeded - run.failed


def test_the_budget_holds_dispatch_until_it_is_raised(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl", 60, uuid.uuid4().hex)
    spec = BatchSpec(
        items=str(items),
        model="simulated/default",
        price_as="openai/gpt-4o-mini",
        workers=2,
        max_cost=0.0002,
    )
    plan = RunPlan(db_path=tmp_path / "runs.db", settings=spec, items_path=items, keep_open=True)
    runner = Runner(plan)
    runner.start()
    try:
        wait_for_thread(lambda: runner.budget_status is not None, "the budget to hold dispatch")
        wait_for_thread(lambda: not runner.flight.calling, "the calls under way")
        held_at = runner.flight.priced_items
        assert 0 < held_at < 60
        assert runner.flight.cost <= 0.0002 + 2 * runner.flight.cost / held_at
        assert runner.budget_status.startswith("budget $0.0002 reached")
        assert runner.flight.priced_items == held_at and not runner.done.is_set()  # held
        runner.set_max_cost(None)
        wait_for_thread(lambda: runner.flight.priced_items == 60, "the rest of the run")
        assert runner.budget_status is None
    finally:
        runner.stop()
        runner.join(30)
    assert runner.outcome.status == "completed"


def test_headless_the_budget_ends_the_run_resumable_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_items(tmp_path / "items.jsonl", 200, uuid.uuid4().hex)
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'items = "items.jsonl"\nmodel = "simulated/default"\nprice_as = "openai/gpt-4o-mini"\n'
        "workers = 2\nmax_cost = 0.0002\n"
    )
    db = tmp_path / "runs.db"
    status = cli.main(["run", str(spec), "--headless", "--db", str(db)])
    assert status == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "stopped: budget $0.0002 reached" in err and "--max-cost USD" in err
    run = asyncio.run(_stored_run(db))
    assert run.status == "interrupted" and run.note.startswith("budget $0.0002 reached")
    assert 0 < run.succeeded < 200 and run.pending > 0
    average = run.cost / run.succeeded
    assert run.cost <= 0.0002 + 2 * average  # at most the calls under way when it was reached
    # resume with a higher limit carries on from there
    status = cli.main(["resume", "latest", "--headless", "--db", str(db), "--max-cost", "1"])
    assert status == cli.EXIT_OK
    assert asyncio.run(_stored_run(db)).succeeded == 200


async def _stored_run(db: Path) -> Any:
    store = await RunStore.open(db, readonly=True)
    try:
        [run] = await store.list_runs()
        return run
    finally:
        await store.close()
