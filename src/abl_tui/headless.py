"""Headless mode: the run with a rich progress display (or plain lines) and a summary."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live

from async_batch_llm.batch_api import ChunkRecord

from .batch_jobs_state import BATCH_EVENT, BatchJobs
from .report import live_panel, retry_hint, status_line, summary_table
from .runner import Runner
from .state import RunState

REFRESH_SECONDS = 0.25
PLAIN_LINE_SECONDS = 5.0


def chunk_line(record: ChunkRecord, before: ChunkRecord | None) -> str | None:
    """A line for a provider batch whose state changed (None: nothing worth a line)."""
    if before is not None and before.state == record.state:
        return None
    name = record.batch_id or record.chunk_id
    if record.state == "ended":
        said = f" ({record.provider_status})" if record.provider_status else ""
        return f"batch {name}: ended{said}, {record.succeeded} done, {record.failed} failed"
    if record.state in ("planned", "released"):
        return None  # "submitted" follows at once (or the chunk is planned again)
    size = f"{record.request_count} request{'s' if record.request_count != 1 else ''}"
    return f"batch {name} ({record.provider}, {size}): {record.state}"


class _Progress:
    """The run state and its provider batches, folded from the runner's buffer."""

    def __init__(self, runner: Runner, console: Console) -> None:
        self.runner = runner
        self.console = console
        self.state = RunState()
        self.jobs = BatchJobs()

    def fold(self) -> None:
        events = self.runner.buffer.drain()
        self.state.apply_all(events)
        for name, data, _at in events:
            if name == BATCH_EVENT:
                record = data["record"]
                line = chunk_line(record, self.jobs.apply(record))
                if line is not None:
                    self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def panel(self) -> RenderableType:
        panel = live_panel(self.state)
        batches = self.jobs.summary()
        return Group(panel, batches) if batches else panel

    def line(self) -> str:
        line = status_line(self.state, time.time())
        batches = self.jobs.summary()
        return f"{line}, {batches}" if batches else line


def _follow(progress: _Progress) -> None:
    """Fold and show progress until the run ends."""
    runner, console = progress.runner, progress.console
    if console.is_terminal:
        with Live(progress.panel(), console=console, refresh_per_second=4) as live:
            while not runner.done.wait(REFRESH_SECONDS):
                progress.fold()
                live.update(progress.panel())
            progress.fold()
            live.update(progress.panel())
        return
    last_line = time.monotonic()
    while not runner.done.wait(REFRESH_SECONDS):
        progress.fold()
        if time.monotonic() - last_line >= PLAIN_LINE_SECONDS:
            last_line = time.monotonic()
            console.print(progress.line(), highlight=False, soft_wrap=True)


def run_headless(runner: Runner, console: Console | None = None) -> RunState:
    """Run to the end, showing progress; Ctrl-C interrupts cleanly (the run stays resumable)."""
    console = console or Console()
    progress = _Progress(runner, console)
    state = progress.state
    if not runner.started:
        runner.start()
    try:
        runner.wait_ready()
        if runner.run_id:
            state.load(runner.initial)
            console.print(f"run-id: {runner.run_id}", highlight=False)
        _follow(progress)
    except KeyboardInterrupt:
        console.print("interrupting: recording items under way, the run stays resumable…")
        runner.cancel()
        runner.join()
    progress.fold()
    outcome = runner.outcome
    if outcome.error is None and runner.run_id:
        state.finished_at = time.time()
        table = summary_table(state, outcome.status)
        batches = progress.jobs.summary()
        if batches:
            table.add_row("batches", batches.removeprefix("batches: "))
        console.print(table)
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
