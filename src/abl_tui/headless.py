"""Headless mode: the run with a rich progress display (or plain lines) and a summary."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from .report import live_panel, retry_hint, status_line, summary_table
from .runner import Runner
from .state import RunState

REFRESH_SECONDS = 0.25
PLAIN_LINE_SECONDS = 5.0


def run_headless(runner: Runner, console: Console | None = None) -> RunState:
    """Run to the end, showing progress; Ctrl-C interrupts cleanly (the run stays resumable)."""
    console = console or Console()
    state = RunState()
    if not runner.started:
        runner.start()
    try:
        runner.wait_ready()
        if runner.run_id:
            state.load(runner.initial)
            console.print(f"run-id: {runner.run_id}", highlight=False)
        if console.is_terminal:
            with Live(live_panel(state), console=console, refresh_per_second=4) as live:
                while not runner.done.wait(REFRESH_SECONDS):
                    state.apply_all(runner.buffer.drain())
                    live.update(live_panel(state))
                state.apply_all(runner.buffer.drain())
                live.update(live_panel(state))
        else:
            last_line = time.monotonic()
            while not runner.done.wait(REFRESH_SECONDS):
                state.apply_all(runner.buffer.drain())
                if time.monotonic() - last_line >= PLAIN_LINE_SECONDS:
                    last_line = time.monotonic()
                    console.print(status_line(state, time.time()), highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        console.print("interrupting: recording items under way, the run stays resumable…")
        runner.cancel()
        runner.join()
    state.apply_all(runner.buffer.drain())
    outcome = runner.outcome
    if outcome.error is None and runner.run_id:
        state.finished_at = time.time()
        console.print(summary_table(state, outcome.status))
        hint = retry_hint(state, resume_command(runner.run_id, runner.plan.db_path))
        if hint:
            console.print(hint, highlight=False, markup=False, soft_wrap=True)
        console.print(f"run-id: {runner.run_id}", highlight=False)
    return state


def resume_command(run_id: str, db_path: Path) -> str:
    """``abl-tui resume RUN``, with ``--db`` unless the store is where it is looked for anyway
    (``$ABL_DB``, else ``abl-runs.db`` here)."""
    default = Path(os.environ.get("ABL_DB") or "abl-runs.db")
    command = f"abl-tui resume {run_id}"
    if Path(db_path).resolve() != default.resolve():
        command += f" --db {shlex.quote(str(db_path))}"
    return command
