"""Rich renderables of a run for the terminal: the live panel, the summary and the runs list."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from . import formatting as fmt
from .state import RunState


def live_panel(state: RunState, now: float | None = None) -> RenderableType:
    """The headless progress display: bar, rates, tokens, cost, failures, cooldown."""
    now = time.time() if now is None else now
    header = Text.assemble(
        ("run ", "dim"),
        (state.run_id or "…", "bold"),
        ("  ", ""),
        (state.name, "cyan"),
        ("  ", ""),
        (state.model, "dim"),
    )
    elapsed, eta = fmt.duration(state.elapsed(now)), fmt.duration(state.eta_seconds(now))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(state.total, 1), completed=state.done, width=40),
        Text(f"{state.done:,}/{state.total:,} {fmt.percent(state.progress())}"),
        Text(f"elapsed {elapsed}  eta {eta}", style="dim"),
    )
    stats = Table.grid(padding=(0, 3))
    stats.add_row(
        f"[bold]{fmt.rate(state.items_per_second(now))}[/] items",
        f"[bold]{fmt.rate(state.tokens_per_second(now))}[/] tokens",
        f"[green]ok {state.succeeded:,}[/]",
        f"[red]failed {state.failed:,}[/]",
        f"retries {state.retries:,}",
        f"busy {state.busy_text()}",
    )
    totals = state.totals
    stats.add_row(
        f"in {fmt.count(totals.input_tokens)}",
        f"out {fmt.count(totals.output_tokens)}",
        f"cached {fmt.count(totals.cached_tokens)} ({fmt.percent(totals.cache_hit_rate)})",
        f"cost {fmt.cost(totals.cost if totals.cost_known else None)}",
        f"429s {state.rate_limits:,}",
        _cooldown_text(state, now),
    )
    return Group(header, bar, stats)


def _cooldown_text(state: RunState, now: float) -> str:
    remaining = state.cooldown_remaining(now)
    if remaining > 0:
        return f"[yellow]cooldown {remaining:.1f}s[/]"
    if state.paused:
        return "[yellow]paused[/]"
    return ""


def status_line(state: RunState, now: float) -> str:
    """One plain line of progress, for output that is not a terminal."""
    totals = state.totals
    hit_rate = fmt.percent(totals.cache_hit_rate)
    return (
        f"{state.done}/{state.total} done ({fmt.percent(state.progress())}), "
        f"elapsed {fmt.duration(state.elapsed(now))}, eta {fmt.duration(state.eta_seconds(now))}, "
        f"{state.succeeded} ok, {state.failed} failed, "
        f"{fmt.rate(state.items_per_second(now))} items, {fmt.count(totals.input_tokens)} in / "
        f"{fmt.count(totals.output_tokens)} out tokens, cached {hit_rate}, "
        f"cost {fmt.cost(totals.cost if totals.cost_known else None)}, 429s {state.rate_limits}"
    )


def summary_table(state: RunState, status: str, now: float | None = None) -> Table:
    """The table printed when a headless run ends."""
    now = time.time() if now is None else now
    totals = state.totals
    table = Table(title=f"run {state.run_id}: {status}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows: list[tuple[str, str]] = [
        ("model", state.model or "?"),
        ("items", f"{state.total:,}"),
        ("succeeded", f"{state.succeeded:,}"),
        ("failed", f"{state.failed:,}"),
        ("retries", f"{state.retries:,}"),
        ("rate limits (429)", f"{state.rate_limits:,}"),
        ("input tokens", f"{totals.input_tokens:,}"),
        ("output tokens", f"{totals.output_tokens:,}"),
        ("cached tokens", f"{totals.cached_tokens:,} ({fmt.percent(totals.cache_hit_rate)})"),
        ("cost", fmt.cost(totals.cost if totals.cost_known else None)),
        ("elapsed", fmt.duration(state.elapsed(now))),
    ]
    for category, number in sorted(state.errors_by_category.items()):
        rows.append((f"  errors: {category}", f"{number:,}"))
    for label, value in rows:
        table.add_row(label, value)
    return table


#: Failed item ids the summary names (the rest are counted).
FAILED_IDS_SHOWN = 10


def retry_hint(state: RunState, command: str) -> str:
    """The failed items (the first few ids) and the command that retries them; "" if none.

    ``command`` is how to resume this run, e.g. ``abl-tui resume r-... --db runs.db``.
    """
    if not state.failed:
        return ""
    ids = list(state.failed_items)[:FAILED_IDS_SHOWN]
    shown = ", ".join(ids)
    more = state.failed - len(ids)
    if more > 0:
        shown += f" and {more:,} more"
    return f"failed: {shown}\nretry them: {command} --retry-failed"


_RUN_COLUMNS = (
    "id",
    "name",
    "model",
    "status",
    "note",
    "total",
    "succeeded",
    "failed",
    "tokens",
    "cost",
    "started",
    "finished",
)


def run_row(run: Any) -> dict[str, Any]:
    """One run as the plain dict both list formats print: the model that ran and, when
    something stopped the run, why (its ``note``)."""
    settings = getattr(run, "settings", None) or {}
    return {
        "id": run.id,
        "name": run.name,
        "model": settings.get("model"),
        "status": run.status,
        "note": getattr(run, "note", None),
        "total": run.total,
        "succeeded": run.succeeded,
        "failed": run.failed,
        "tokens": (run.input_tokens or 0) + (run.output_tokens or 0),
        "cost": run.cost,
        "started": _iso(run.started_at),
        "finished": _iso(run.finished_at),
    }


def _iso(stamp: float | str | None) -> str | None:
    if stamp is None or isinstance(stamp, str):
        return stamp
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


#: Columns left out of the runs table in a terminal narrower than ``_WIDE`` columns.
_NARROW_DROPS = ("tokens", "finished", "model", "started", "succeeded", "total")
_WIDE = 100


def print_runs(runs: Sequence[Any], *, fmt: str = "table", console: Console | None = None) -> None:
    """Print the runs list as JSON or as a table whose run ids are never cut.

    Piped output gets every column on one line; a terminal narrower than 100 columns
    leaves out tokens and finish times (``--format json`` has everything).
    """
    rows = [run_row(run) for run in runs]
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=200)
    if not rows:
        console.print("no runs yet")
        return
    narrow = console.width < _WIDE
    columns = [key for key in _RUN_COLUMNS if not (narrow and key in _NARROW_DROPS)]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for key in columns:
        table.add_column(
            key,
            no_wrap=True,
            overflow="ellipsis",
            max_width={
                "name": 10 if narrow else 24,
                "status": 11,
                "model": 24,
                "note": 16 if narrow else 40,
            }.get(key),
            min_width={"id": 19, "cost": 7}.get(key),
            justify="right" if key in _NUMERIC else "left",
        )
    for row in rows:
        table.add_row(*(_cell(key, row[key]) for key in columns))
    console.print(table)
    if narrow:
        console.print("[dim]model, counts, tokens and times: a wider terminal or --format json[/]")


_NUMERIC = {"total", "succeeded", "failed", "tokens", "cost"}


def _cell(key: str, value: Any) -> str:
    if key == "cost":
        return fmt.cost(value)
    if key == "tokens":
        return fmt.count(value)
    if key in ("started", "finished") and value:
        return str(value)[5:16]  # MM-DD HH:MM: the year and seconds do not fit 80 columns
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)
