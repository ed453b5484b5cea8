"""Headless mode: the run with a rich progress display (or plain lines) and a summary.

Nothing here runs per engine event: a few times a second the display takes the counts the
runner's flight log keeps in the engine's thread, and the provider batches' reports from the
runner's buffer (which, headless, carries nothing else); the summary is the stored run's.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live

from .batch_jobs_state import BATCH_EVENT, BatchJobs
from .report import live_panel, retry_hint, status_line, summary_table
from .runner import Runner
from .state import RunState, WorkerState

if TYPE_CHECKING:
    from async_batch_llm.batch_api import ChunkRecord

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


def _tokens(state: RunState) -> int:
    return state.totals.input_tokens + state.totals.output_tokens


class _Progress:
    """The run state shown: the stored run as this session found it (``base``) plus the
    runner's counts of this session; and the run's provider batches."""

    def __init__(self, runner: Runner, console: Console) -> None:
        self.runner = runner
        self.console = console
        self.state = RunState()
        self.base = RunState()
        self.jobs = BatchJobs()

    def begin(self, now: float) -> None:
        """Start from the stored run (a resumed run shows what it had already done)."""
        for state in (self.state, self.base):
            state.load(self.runner.initial)
        self.state.started_at = now
        self.state.status = "running"

    def update(self, now: float) -> None:
        """Print the provider batches that changed; take the runner's counts."""
        self._show_batches()
        self._count(now)

    def _show_batches(self) -> None:
        for name, data, _at in self.runner.buffer.drain():
            if name == BATCH_EVENT:
                record = data["record"]
                line = chunk_line(record, self.jobs.apply(record))
                if line is not None:
                    self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def _count(self, now: float) -> None:
        """The stored counts plus this session's (the flight log's, read as they are: each
        number is whole, the set of them at most a few items apart)."""
        flight, base, state = self.runner.flight, self.base, self.state
        done_before, tokens_before = state.done, _tokens(state)
        state.succeeded = base.succeeded + flight.succeeded
        state.failed = base.failed + flight.failed
        state.retries = base.retries + flight.retries
        state.rate_limits = base.rate_limits + flight.rate_limits
        state.errors_by_category = flight.errors_by_category
        state.cooldown_until = flight.cooldown_until
        totals, before = state.totals, base.totals
        totals.input_tokens = before.input_tokens + flight.input_tokens
        totals.output_tokens = before.output_tokens + flight.output_tokens
        totals.cached_tokens = before.cached_tokens + flight.cached_tokens
        totals.cost = before.cost + flight.cost
        totals.cost_known = before.cost_known or flight.priced_items > 0
        state.completions.add(now, state.done - done_before)
        state.tokens.add(now, _tokens(state) - tokens_before)

    def finish(self, now: float) -> None:
        """The last counts, then the stored run's totals and failed items (when it could be
        read once it ended): what the summary shows."""
        self.update(now)
        self.state.finished_at = now
        if self.runner.final is not None:
            self.state.load(self.runner.final, keep_session=True)

    def panel(self) -> RenderableType:
        state = self.state
        busy = self.runner.flight.in_flight
        state.workers = {
            n: WorkerState(n, item_id="" if n < busy else None)
            for n in range(max(state.max_workers, busy))
        }  # as many calling as the flight log counts
        panel = live_panel(state)
        batches = self.jobs.summary()
        return Group(panel, batches) if batches else panel

    def line(self) -> str:
        line = status_line(self.state, time.time())
        batches = self.jobs.summary()
        return f"{line}, {batches}" if batches else line


def _follow(progress: _Progress) -> None:
    """Show progress until the run ends."""
    runner, console = progress.runner, progress.console
    if console.is_terminal:
        with Live(progress.panel(), console=console, refresh_per_second=4) as live:
            while not runner.done.wait(REFRESH_SECONDS):
                progress.update(time.time())
                live.update(progress.panel())
            progress.update(time.time())
            live.update(progress.panel())
        return
    last_line = time.monotonic()
    while not runner.done.wait(REFRESH_SECONDS):
        progress.update(time.time())
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
            progress.begin(time.time())
            console.print(f"run-id: {runner.run_id}", highlight=False)
        _follow(progress)
    except KeyboardInterrupt:
        console.print("interrupting: recording items under way, the run stays resumable…")
        runner.cancel()
        runner.join()
    progress.finish(time.time())
    outcome = runner.outcome
    if outcome.error is None and runner.run_id:
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
