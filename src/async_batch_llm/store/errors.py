"""The one exception the run store raises for anything the user can act on."""

from __future__ import annotations

from ..errors import AblError


class StoreError(AblError):
    """A run store problem, as one line naming the file and what is wrong.

    Raised for files that are not run stores (corrupt, foreign, too new), missing runs and
    misuse (writing through a read-only store); never a raw ``sqlite3`` traceback.
    """


class StoreUnwritable(StoreError):
    """The store refused the run's writes (disk full, locked) for longer than its owner would
    wait: the run stopped, resumable once the cause is gone."""
