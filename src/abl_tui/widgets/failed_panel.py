"""The failed-items panel: a status filter, a search box, retry buttons and the table."""

from __future__ import annotations

from typing import Literal

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Button, DataTable, Input, Static

from ..model import RunModel
from .failed_table import FailedRow, FailedTable

Filter = Literal["failed", "retried", "all"]
FILTERS: tuple[Filter, ...] = ("failed", "retried", "all")
#: Columns the table sorts by (``s`` steps through them, a header click picks one), with
#: their names in the title. "" keeps the order failures came in.
SORTS: dict[str, str] = {
    "": "",
    "id": "id",
    "state": "state",
    "category": "category",
    "attempts": "calls",
    "message": "message",
}


def sort_rows(rows: list[FailedRow], column: str, reverse: bool = False) -> list[FailedRow]:
    """``rows`` ordered by ``column`` (then by id), or as they came when ``column`` is ""."""
    if not column:
        return rows[::-1] if reverse else rows
    field = "item_id" if column == "id" else column
    return sorted(rows, key=lambda row: (getattr(row, field), row.item_id), reverse=reverse)


def failed_rows(
    model: RunModel, which: Filter, query: str = "", category: str = ""
) -> list[FailedRow]:
    """The rows a filter, a category and a search (by id, category or message) select, in
    table order.

    "failed": items whose last outcome is a failure; "retried": items sent again by hand in
    this session, with what became of them; "all": both (an item in both shows as failed).
    """
    rows: list[FailedRow] = []
    failed = model.state.failed_items
    if which in ("failed", "all"):
        rows.extend(
            FailedRow(item.item_id, "failed", item.error_category, item.attempts, item.error)
            for item in failed.values()
        )
    if which in ("retried", "all"):
        retried = model.retries.items.values()
        rows.extend(
            FailedRow(item.item_id, item.status, item.error_category, item.attempts, item.error)
            for item in retried
            if which == "retried" or item.item_id not in failed
        )
    if category:
        rows = [row for row in rows if row.category == category]
    needle = query.strip().lower()
    if needle:
        rows = [
            row
            for row in rows
            if needle in row.item_id.lower()
            or needle in row.message.lower()
            or needle in row.category.lower()
        ]
    return rows


class FailedPanel(Vertical):
    """Failed items with their error; the screen owns the actions, this owns the view."""

    status_filter: reactive[Filter] = reactive("failed", init=False)
    search_text: reactive[str] = reactive("", init=False)
    category_filter: reactive[str] = reactive("", init=False)  # "": every category
    sort_column: reactive[str] = reactive("", init=False)  # a key of SORTS
    sort_reverse: reactive[bool] = reactive(False, init=False)

    def __init__(self, *, read_only: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self._read_only = read_only
        self._model: RunModel | None = None
        self._shown: tuple[object, ...] = ()
        self._table = FailedTable(id="failed-table")
        self._search = Input(
            placeholder="search id, category or message", id="search", compact=True
        )
        self._filters = {
            name: Button(name, id=f"filter-{name}", compact=True, classes="filter")
            for name in FILTERS
        }
        self._retry_one = Button("Retry", id="retry-one", compact=True, variant="primary")
        self._retry_all = Button("Retry all", id="retry-all", compact=True, variant="warning")
        self.border_title = "Failed"

    def compose(self) -> ComposeResult:
        with Horizontal(id="failed-toolbar"):
            yield from self._filters.values()
            yield Static(id="failed-spacer")
            if not self._read_only:
                yield self._retry_one
                yield self._retry_all
        yield self._search
        yield self._table

    def on_mount(self) -> None:
        self._mark_filter()
        self._search.display = False

    @property
    def search_open(self) -> bool:
        """True while the search box is shown."""
        return bool(self._search.display)

    @property
    def table(self) -> FailedTable:
        """The table inside the panel."""
        return self._table

    def _signature(self, model: RunModel) -> tuple[object, ...]:
        """Changes whenever what the panel shows may have: a cheap test before a diff."""
        state = model.state
        failed = state.failed_items
        last = failed[next(reversed(failed))] if failed else None
        return (
            id(model),
            state.failed,
            len(failed),
            last,
            model.retries.version,
            self.status_filter,
            self.search_text,
            self.category_filter,
            self.sort_column,
            self.sort_reverse,
            self._table.highlighted_key,
        )

    def show(self, model: RunModel, *, reorder: bool = False) -> None:
        """Bring the table in step with the model under the current filter and search."""
        self._model = model
        signature = self._signature(model)
        if signature == self._shown and not reorder:
            return
        self._shown = signature
        rows = failed_rows(model, self.status_filter, self.search_text, self.category_filter)
        sorted_now = bool(self.sort_column) or self.sort_reverse
        if sorted_now:
            rows = sort_rows(rows, self.sort_column, self.sort_reverse)
        self.table.sync(rows, reorder=reorder or sorted_now)
        state = model.state
        title = f"Failed {state.failed:,}"
        if model.retries.items:
            title += f" · retried {len(model.retries.items):,}"
        if self.category_filter:
            title += f" · {self.category_filter} only (c: next)"
        else:
            groups = state.failed_by_category()
            title += "".join(f" · {name} {count:,}" for name, count in groups[:3])
            if len(groups) > 3:
                title += f" · +{len(groups) - 3} more"
        if self.search_text.strip():
            title += f" · {len(rows):,} match “{self.search_text.strip()}”"
        if sorted_now:
            arrow = "↑" if self.sort_reverse else "↓"
            title += f" · by {SORTS[self.sort_column] or 'time'} {arrow}"
        if title != self.border_title:
            self.border_title = title
        if not self._read_only:
            self._retry_one.disabled = not self.can_retry_highlighted()
            self._retry_all.disabled = state.failed == 0
            label = "Retry group" if self.category_filter else "Retry all"
            if str(self._retry_all.label) != label:
                self._retry_all.label = label

    def can_retry_highlighted(self) -> bool:
        """True when the highlighted row is an item whose last outcome is a failure."""
        row = self.highlighted_row
        return row is not None and row.state == "failed"

    @property
    def highlighted_row(self) -> FailedRow | None:
        """The highlighted row, if any."""
        key = self.table.highlighted_key
        return self.table.row(key) if key is not None else None

    def cycle_category(self) -> None:
        """Next error category (most failures first), then every category again."""
        names = [""]
        if self._model is not None:
            names += [name for name, _ in self._model.state.failed_by_category()]
        if self.category_filter not in names:
            self.category_filter = ""
            return
        self.category_filter = names[(names.index(self.category_filter) + 1) % len(names)]

    def shown_failed_ids(self) -> list[str]:
        """The failed items the current category selects (every failed item when none)."""
        if self._model is None:
            return []
        failed = self._model.state.failed_items.values()
        wanted = self.category_filter
        return [item.item_id for item in failed if not wanted or item.error_category == wanted]

    def cycle_filter(self) -> None:
        """Next status filter: failed → retried → all."""
        self.status_filter = FILTERS[(FILTERS.index(self.status_filter) + 1) % len(FILTERS)]

    def open_search(self) -> None:
        """Show the search box and focus it."""
        search = self._search
        search.display = True
        search.focus()

    def close_search(self) -> None:
        """Clear and hide the search box; the table gets the focus back."""
        search = self._search
        search.value = ""
        search.display = False
        self.table.focus()

    def watch_status_filter(self) -> None:
        self._mark_filter()
        self._resync()

    def watch_search_text(self) -> None:
        self._resync()

    def watch_category_filter(self) -> None:
        self._resync()

    def watch_sort_column(self) -> None:
        self._resync()

    def watch_sort_reverse(self) -> None:
        self._resync()

    def cycle_sort(self) -> None:
        """Next sort column: id, state, category, calls, message, then arrival order."""
        names = list(SORTS)
        self.sort_column = names[(names.index(self.sort_column) + 1) % len(names)]

    def sort_by(self, column: str) -> None:
        """Sort by ``column``; the same column again reverses the order."""
        if column not in SORTS:
            return
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False

    def _mark_filter(self) -> None:
        for name, button in self._filters.items():
            button.set_class(name == self.status_filter, "-active")

    def _resync(self) -> None:
        if self._model is not None:
            self.show(self._model, reorder=True)

    @on(Button.Pressed, ".filter")
    def _filter_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        assert event.button.id is not None
        self.status_filter = event.button.id.removeprefix("filter-")  # type: ignore[assignment]

    @on(DataTable.HeaderSelected, "#failed-table")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value or ""))

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.search_text = event.value

    @on(Input.Submitted, "#search")
    def _search_done(self, event: Input.Submitted) -> None:
        self.table.focus()
