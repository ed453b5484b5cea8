"""The failed-items table, kept in step with the run by a keyed diff.

Rows are keyed by item id: new ones are added, gone ones removed, and ``update_cell`` is
called only where a value changed, so the highlighted row stays on the same item while
the table changes under it (large changes rebuild the table, and restore the cursor too).
The message column shows the provider's own words (see
:func:`~abl_tui.formatting.provider_message`); the detail screen has the full text.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.events import Resize
from textual.widgets import DataTable

from ..formatting import provider_message

#: (key, header, width); the message column takes what is left.
_FIXED_COLUMNS = (("state", "state", 7),)
#: The id and category columns fit the longest value shown, within these bounds (they
#: widen when a longer one comes, and never narrow while the table lives).
_ID_WIDTHS = (6, 20)
_CATEGORY_WIDTHS = (8, 24)
#: Calls made for the item, every round's (429s included: they do not use up max_attempts).
_TRY_COLUMN = ("attempts", "calls", 5)
_MESSAGE = "message"
#: Past this many removals at once, rebuilding beats ``remove_row`` (each is O(rows)).
REBUILD_THRESHOLD = 64

#: The theme variable that colours each row state.
STATE_VARIABLES = {
    "failed": "status-failed",
    "queued": "status-retry",
    "running": "status-running",
    "ok": "status-ok",
}


@dataclass(frozen=True, slots=True)
class FailedRow:
    """One row as the table shows it; equality drives the diff."""

    item_id: str
    state: str
    category: str
    attempts: int
    message: str


class FailedTable(DataTable[Text]):
    """A row-cursor table of failed (and retried) items; Enter opens the item's detail."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Detail", id="abl.detail"),
        Binding("j", "cursor_down", "Down", show=False, id="abl.table.down"),
        Binding("k", "cursor_up", "Up", show=False, id="abl.table.up"),
        Binding("g", "scroll_top", "First", show=False, id="abl.table.first"),
        Binding("G", "scroll_bottom", "Last", show=False, id="abl.table.last"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._rows: dict[str, FailedRow] = {}
        self._order: list[str] = []
        self._message_width = 0  # set by the first resize, which adds the columns
        self._category_width = _CATEGORY_WIDTHS[0]
        self._id_width = _ID_WIDTHS[0]
        self._width = 0

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer "Detail" only when there is a row to open."""
        if action == "select_cursor":
            return self.row_count > 0
        return super().check_action(action, parameters)

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._rebuild())

    # ------------------------------------------------------------------ reading

    @property
    def highlighted_key(self) -> str | None:
        """The item id of the highlighted row, or None when the table is empty."""
        if not self.row_count:
            return None
        row = min(max(self.cursor_row, 0), self.row_count - 1)
        key = self.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value
        return key

    @property
    def keys(self) -> list[str]:
        """Item ids in table order."""
        return list(self._order)

    def row(self, item_id: str) -> FailedRow | None:
        """The row shown for an item, if any."""
        return self._rows.get(item_id)

    # ------------------------------------------------------------------ diffing

    def sync(self, rows: list[FailedRow], *, reorder: bool = False) -> None:
        """Make the table show ``rows`` (by item id), touching only what changed.

        Live updates keep existing rows where they are and add new ones at the end;
        ``reorder`` (a new filter or search) lays the rows out in the given order.
        """
        wanted = {row.item_id: row for row in rows}
        if not self.columns:  # not sized yet: the first resize lays the rows out
            self._rows, self._order = wanted, list(wanted)
            return
        if self._widen(rows):  # a longer id or category: widen, never cut it
            self._rows, self._order = wanted, list(wanted)
            self._resize_columns(self._width, force=True)
            return
        highlighted = self.highlighted_key
        gone = [key for key in self._order if key not in wanted]
        if reorder and self._order != [row.item_id for row in rows]:
            gone = self._order  # force the rebuild below
        if len(gone) > REBUILD_THRESHOLD or (reorder and gone):
            self._rows = wanted
            self._order = list(wanted)
            self._rebuild(highlighted)
            return
        for key in gone:
            self.remove_row(key)
            del self._rows[key]
        if gone:
            gone_set = set(gone)
            self._order = [key for key in self._order if key not in gone_set]
        for row in rows:
            old = self._rows.get(row.item_id)
            if old is None:
                self.add_row(*self._cells(row), key=row.item_id)
                self._order.append(row.item_id)
            elif old != row:
                self._update(old, row)
            self._rows[row.item_id] = row
        self._keep_cursor(highlighted)

    def _widen(self, rows: list[FailedRow]) -> bool:
        """Widen the id and category columns to fit ``rows``; True if either grew."""
        id_width = _fitting([len(row.item_id) for row in rows], _ID_WIDTHS)
        category_width = _fitting([len(row.category) for row in rows], _CATEGORY_WIDTHS)
        grew = id_width > self._id_width or category_width > self._category_width
        self._id_width = max(self._id_width, id_width)
        self._category_width = max(self._category_width, category_width)
        return grew

    def _update(self, old: FailedRow, new: FailedRow) -> None:
        key = new.item_id
        if old.state != new.state:
            self.update_cell(key, "state", self._state_cell(new.state))
        if old.category != new.category:
            self.update_cell(key, "category", _cell(new.category))
        if old.attempts != new.attempts:
            self.update_cell(key, "attempts", _cell(str(new.attempts), justify="right"))
        if old.message != new.message:
            self.update_cell(key, _MESSAGE, _cell(provider_message(new.message)))

    def _keep_cursor(self, highlighted: str | None) -> None:
        if highlighted is None or highlighted not in self._rows:
            return
        index = self.get_row_index(highlighted)
        if index != self.cursor_row:
            self.move_cursor(row=index, animate=False)

    # ------------------------------------------------------------------ building

    def _add_columns(self) -> None:
        self.add_column("id", width=self._id_width, key="id")
        for key, label, width in _FIXED_COLUMNS:
            self.add_column(label, width=width, key=key)
        self.add_column("category", width=self._category_width, key="category")
        self.add_column(_TRY_COLUMN[1], width=_TRY_COLUMN[2], key=_TRY_COLUMN[0])
        self.add_column(_MESSAGE, width=self._message_width, key=_MESSAGE)

    def _rebuild(self, highlighted: str | None = None) -> None:
        """Clear and refill (on a big change, a resize, or a theme switch)."""
        if highlighted is None:
            highlighted = self.highlighted_key
        self.clear(columns=True)
        self._add_columns()
        for key in self._order:
            self.add_row(*self._cells(self._rows[key]), key=key)
        self._keep_cursor(highlighted)

    def on_resize(self, event: Resize) -> None:
        self._resize_columns(event.size.width)

    def _resize_columns(self, table_width: int, *, force: bool = False) -> None:
        """Give the message column the width the others leave (the scrollbar's kept free)."""
        self._width = table_width
        if not self.columns:  # the first layout: fit the categories already known
            self._widen([*self._rows.values()])
        fixed = sum(width for _, _, width in _FIXED_COLUMNS) + _TRY_COLUMN[2]
        fixed += self._category_width + self._id_width
        padding = 2 * self.cell_padding * (len(_FIXED_COLUMNS) + 4)
        scrollbar = self.styles.scrollbar_size_vertical
        width = max(table_width - fixed - padding - scrollbar, 10)
        if force and self.columns:
            self._message_width = width
            self._rebuild()
        elif width != self._message_width:
            first = self._message_width == 0
            self._message_width = width
            if first and not self.columns:
                self._add_columns()
                for key in self._order:
                    self.add_row(*self._cells(self._rows[key]), key=key)
            else:
                self._rebuild()

    def _state_cell(self, state: str) -> Text:
        variable = STATE_VARIABLES.get(state)
        color = self.app.theme_variables.get(variable, "") if variable else ""
        return _cell(state, style=f"bold {color}".strip())

    def _cells(self, row: FailedRow) -> tuple[Text, ...]:
        return (
            _cell(row.item_id),
            self._state_cell(row.state),
            _cell(row.category),
            _cell(str(row.attempts), justify="right"),
            _cell(provider_message(row.message)),
        )


def _fitting(values: list[int], bounds: tuple[int, int]) -> int:
    """A column width for values of these lengths: the longest, within ``bounds``."""
    low, high = bounds
    return min(max(max(values, default=0), low), high)


def _cell(value: str, *, style: str = "", justify: str = "left") -> Text:
    """A one-line cell that ends in an ellipsis when it does not fit."""
    return Text(
        value.replace("\n", " "),
        style=style,
        no_wrap=True,
        overflow="ellipsis",
        justify=justify,  # type: ignore[arg-type]
    )
