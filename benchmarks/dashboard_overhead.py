"""Dashboard overhead: the same dry-run batch with and without the Textual dashboard attached.

Both sides run the real :class:`~abl_tui.runner.Runner` (engine thread, run store) on a
``--dry-run`` batch, in one process, alternating so machine noise hits both:

(a) headless: the UI thread only drains the event buffer into a RunState every 0.25 s;
(b) dashboard: the full app in headless Textual mode (``App.run_test``), redrawing at 5 Hz.

Items/s is timed from the engine's ``batch_started`` to its ``batch_completed`` event (the
processing phase; ingesting the JSONL is the same for both and is reported apart). Target:
the dashboard keeps at least 0.7x of the headless rate.

Headless Textual skips the terminal output, so ``--pty`` measures what a user feels: the
real ``abl-tui run ITEMS --dry-run`` in a pseudo-terminal of 120x40 (every panel on screen,
its output read and thrown away as a terminal would), against the same command with
``--headless`` in the same kind of terminal. Items/s comes from the run store (the run's
start to its end); the dashboard is told ``q`` once the store says the run ended. Target:
>= 0.85x.

    python benchmarks/dashboard_overhead.py [--items 50000] [--rounds 2] [--workers 16]
    python benchmarks/dashboard_overhead.py --pty [--items 200000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import select
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abl_tui.app import DashboardApp
from abl_tui.batchfile import BatchSpec
from abl_tui.model import RunModel
from abl_tui.runner import Runner, RunPlan

DRAIN_SECONDS = 0.25


@dataclass
class Timing:
    """One run: processing-phase items/s, and the wall time from start to the end."""

    items_per_second: float
    processing: float
    wall: float


class PhaseClock:
    """Picks the processing phase out of the events the UI side folds anyway."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.completed: float | None = None

    def watch(self, events: list[tuple[str, dict[str, Any], float]]) -> list[Any]:
        for name, _, at in events:
            if name == "batch_started" and self.started is None:
                self.started = at
            elif name == "batch_completed":
                self.completed = at
        return events

    def timing(self, items: int, wall: float) -> Timing:
        assert self.started is not None and self.completed is not None, "no complete round"
        processing = self.completed - self.started
        return Timing(items / processing, processing, wall)


def write_items(folder: Path, count: int) -> Path:
    """A JSONL batch of ``count`` short prompts."""
    path = folder / "items.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for number in range(count):
            out.write(json.dumps({"id": f"item-{number:06d}", "prompt": f"Classify {number}"}))
            out.write("\n")
    return path


def make_runner(folder: Path, items: Path, tag: str, workers: int) -> Runner:
    """A dry-run runner on its own store file."""
    spec = BatchSpec(items=str(items), model="simulated/fast", workers=workers, dry_run=True)
    plan = RunPlan(db_path=folder / f"{tag}.db", settings=spec, items_path=items)
    return Runner(plan)


def run_headless(folder: Path, items: Path, count: int, tag: str, workers: int) -> Timing:
    """(a) The runner with the UI side reduced to draining into a RunState."""
    runner = make_runner(folder, items, tag, workers)
    dashboard, phase = RunModel(), PhaseClock()
    started = time.perf_counter()
    runner.start()
    runner.wait_ready()
    dashboard.seed(runner.initial)
    while not runner.done.wait(DRAIN_SECONDS):
        dashboard.fold(phase.watch(runner.buffer.drain()))
    dashboard.fold(phase.watch(runner.buffer.drain()))
    wall = time.perf_counter() - started
    assert dashboard.state.succeeded == count, dashboard.state.succeeded
    return phase.timing(count, wall)


class TimedDashboard(DashboardApp):
    """The dashboard, noting the processing phase from the events it drains."""

    def __init__(self, runner: Runner) -> None:
        super().__init__(runner)
        self.phase = PhaseClock()
        drain = runner.buffer.drain
        runner.buffer.drain = lambda limit=200_000: self.phase.watch(drain(limit))  # type: ignore[method-assign]


async def run_dashboard(folder: Path, items: Path, count: int, tag: str, workers: int) -> Timing:
    """(b) The same runner with the whole app attached (headless Textual)."""
    runner = make_runner(folder, items, tag, workers)
    app = TimedDashboard(runner)
    started = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.model.ended:
            await pilot.pause(0.1)
        wall = time.perf_counter() - started
        assert app.model.state.succeeded == count, app.model.state.succeeded
    runner.join()
    return app.phase.timing(count, wall)


# ---------------------------------------------------------------------- in a real terminal

#: The pseudo-terminal's size (rows, columns): the layout with every panel on screen.
PTY_ROWS, PTY_COLUMNS = 40, 120


def _stored_run(db: Path) -> tuple[str, float | None, float | None] | None:
    """The run's status, start and end as the store has them (None before it exists)."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as connection:
            row = connection.execute("SELECT status, started_at, finished_at FROM runs").fetchone()
    except sqlite3.Error:
        return None
    return (row[0], row[1], row[2]) if row else None


def run_in_pty(
    folder: Path, items: Path, count: int, tag: str, workers: int, *, dashboard: bool
) -> Timing:
    """The real command in a 120x40 pseudo-terminal, its output read and discarded."""
    db = folder / f"{tag}.db"
    argv = [sys.executable, "-m", "abl_tui.cli", "run", str(items), "--dry-run", "--db", str(db)]
    argv += ["--workers", str(workers), *(() if dashboard else ("--headless",))]
    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", PTY_ROWS, PTY_COLUMNS, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(PTY_COLUMNS)}
    env["LINES"] = str(PTY_ROWS)
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=secondary, stdout=secondary, stderr=secondary, env=env, start_new_session=True
    )
    os.close(secondary)
    asked_to_quit = False
    next_poll = 0.0
    shown, tail = 0, b""
    while proc.poll() is None:
        ready, _, _ = select.select([primary], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(primary, 1 << 16)
            except OSError:
                break
            shown += len(chunk)
            tail = (tail + chunk)[-4000:]
        if dashboard and not asked_to_quit and time.perf_counter() >= next_poll:
            next_poll = time.perf_counter() + 0.25
            run = _stored_run(db)
            if run is not None and run[0] in ("completed", "failed"):
                os.write(primary, b"q")  # the run ended: quit (no question once it has)
                asked_to_quit = True
    proc.wait()
    wall = time.perf_counter() - started
    os.close(primary)
    run = _stored_run(db)
    ended = run is not None and run[1] is not None and run[2] is not None
    assert ended, (tag, run, proc.returncode, tail.decode(errors="replace")[-1500:])
    assert run[0] == "completed", run
    processing = run[2] - run[1]
    print(f"    {tag}: {count / processing:,.0f} items/s, {shown / 1e6:.1f} MB of terminal output")
    return Timing(count / processing, processing, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument(
        "--pty", action="store_true", help="the real command in a 120x40 pseudo-terminal"
    )
    args = parser.parse_args()
    headless: list[Timing] = []
    attached: list[Timing] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items = write_items(folder, args.items)
        for round_number in range(args.rounds):
            if args.pty:
                for side, timings in (("headless", headless), ("dashboard", attached)):
                    tag = f"pty-{side}{round_number}"
                    timings.append(
                        run_in_pty(
                            folder, items, args.items, tag, args.workers,
                            dashboard=side == "dashboard",
                        )
                    )  # fmt: skip
                continue
            headless.append(
                run_headless(folder, items, args.items, f"headless{round_number}", args.workers)
            )
            attached.append(
                asyncio.run(
                    run_dashboard(folder, items, args.items, f"app{round_number}", args.workers)
                )
            )
    where = f"a {PTY_COLUMNS}x{PTY_ROWS} pseudo-terminal" if args.pty else "headless Textual"
    print(
        f"{args.items:,} dry-run items, {args.workers} workers, {args.rounds} rounds each, "
        f"in {where}"
    )
    for label, timings in (("headless", headless), ("dashboard", attached)):
        rates = ", ".join(f"{timing.items_per_second:,.0f}" for timing in timings)
        walls = ", ".join(f"{timing.wall:.1f}s" for timing in timings)
        print(f"  {label:<9}  items/s {rates}   (start to end {walls})")
    best_headless = max(timing.items_per_second for timing in headless)
    best_attached = max(timing.items_per_second for timing in attached)
    median_ratio = statistics.median(
        a.items_per_second / h.items_per_second for h, a in zip(headless, attached, strict=True)
    )
    print(
        f"  ratio dashboard/headless: best {best_attached / best_headless:.2f}x, "
        f"median of pairs {median_ratio:.2f}x (target >= {0.85 if args.pty else 0.7}x)"
    )


if __name__ == "__main__":
    main()
