"""Batch jobs: a run's provider batches (``batch_api`` runs), one line each.

Each line: the provider's batch id (our chunk id until it is submitted), the provider, the
status (ours, and the provider's own word), done/failed/total requests, age, and the time
left before the provider gives up on the batch and before we cancel it (``--batch-deadline``).
Fixed-width plain lines cut to the panel's width; narrow panels drop the deadline, age and
provider columns, in that order, rather than wrap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.text import Text
from textual.events import Resize
from textual.widgets import Static

from async_batch_llm.batch_api import ChunkRecord

from ..batch_jobs_state import BatchJobRow, job_rows, summary
from .workers_table import short_duration

__all__ = ["BatchJobsPanel", "batch_jobs_text"]

#: The narrowest the batch-id column gets before a column makes way for it.
_MIN_LABEL = 10
_STATUS = 11


def _left(seconds: float | None) -> str:
    """Time left, five cells at most: ``42s``, ``12m05``, ``--`` (none), ``now`` (passed)."""
    if seconds is None:
        return "--"
    return "now" if seconds <= 0 else short_duration(seconds)


def _counts(row: BatchJobRow) -> str:
    return f"{row.done}/{row.failed}/{row.total}"


#: ``(header, width, value)`` of each column after the batch id, in the order they are shown;
#: the last ones go first when the panel is narrow.
_Column = tuple[str, int, Callable[[BatchJobRow], str]]
_COLUMNS: list[_Column] = [
    ("status", _STATUS, lambda row: row.status),
    ("ok/fail/all", 11, _counts),
    ("via", 9, lambda row: row.provider),
    ("age", 5, lambda row: short_duration(row.age or 0.0)),
    ("expires", 7, lambda row: _left(row.to_provider_deadline)),
    ("ours", 5, lambda row: _left(row.to_our_deadline)),
]
_DROP_ORDER = ("ours", "expires", "age", "via")


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _fit_id(text: str, width: int) -> str:
    """An id cut in its middle (``msgbat…5uDC8jWR4ZsDV8d``): its end tells batches apart."""
    if len(text) <= width:
        return text
    head = min(6, max(width // 3, 1))
    return text[:head] + "…" + text[len(text) - (width - head - 1) :]


def _columns(width: int) -> tuple[int, list[_Column]]:
    """The batch-id column's width and the other columns that fit ``width``."""
    columns = list(_COLUMNS)
    for name in _DROP_ORDER:
        if width - sum(size + 1 for _, size, _ in columns) >= _MIN_LABEL:
            break
        columns = [column for column in columns if column[0] != name]
    label = max(width - sum(size + 1 for _, size, _ in columns), _MIN_LABEL)
    return label, columns


def batch_jobs_text(rows: Iterable[BatchJobRow], width: int) -> Text:
    """The panel's lines for ``rows`` at ``width`` cells (ended batches dimmed)."""
    label, columns = _columns(width)
    text = Text(no_wrap=True, overflow="ellipsis")
    header = f"{'batch':<{label}}" + "".join(
        f" {name:<{size}}" if name == "status" else f" {name:>{size}}" for name, size, _ in columns
    )
    text.append(_fit(header, width), "dim")
    shown = 0
    for row in rows:
        line = f"{_fit_id(row.label, label):<{label}}"
        for name, size, value in columns:
            cell = _fit(value(row), size)
            line += f" {cell:<{size}}" if name == "status" else f" {cell:>{size}}"
        text.append("\n" + _fit(line, width), "dim" if row.ended else "")
        shown += 1
    if not shown:
        text.append("\n" + _fit("no batch submitted yet", width), "dim")
    return text


class BatchJobsPanel(Static):
    """The bordered batch-jobs panel; :meth:`show` takes the run's chunk records."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Batches"
        self._rows: list[BatchJobRow] = []
        self._shown: tuple[object, ...] = ()

    def show(self, records: Iterable[ChunkRecord], now: float) -> None:
        """Redraw from the chunks (a runner's ``batch_chunks``, or the store's for watch mode)."""
        records = list(records)
        self.border_subtitle = summary(records).removeprefix("batches: ")
        self._rows = job_rows(records, now)
        self._render_rows()

    def _render_rows(self) -> None:
        width = self.content_size.width or 78
        text = batch_jobs_text(self._rows, width)
        key = (text.plain, width)
        if key == self._shown:
            return
        self._shown = key
        self.update(text)

    def on_resize(self, event: Resize) -> None:
        self._render_rows()
