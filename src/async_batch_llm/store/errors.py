"""The one exception the run store raises for anything the user can act on."""

from __future__ import annotations


class StoreError(Exception):
    """A run store problem, as one line naming the file and what is wrong.

    Raised for files that are not run stores (corrupt, foreign, too new), missing runs and
    misuse (writing through a read-only store); never a raw ``sqlite3`` traceback.
    """
