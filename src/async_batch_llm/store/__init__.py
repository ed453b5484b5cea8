"""The run store: every run, item and attempt in one SQLite file, written without slowing runs.

    store = await RunStore.open("abl-runs.db")
    run_id = await store.create_run(name="demo", source="demo.toml", settings={...})
    await store.ingest(run_id, items)                 # pending, before anything is sent
    writer = store.observer(run_id)                   # attach to the processor's observers
    ... async for item in store.pending_items(run_id): add it to the processor ...
    await writer.close()                              # commits the last results
    await store.close()

An item is done only once its result is committed; resume sends everything else again.
"""

from .encode import strip_secrets
from .errors import StoreError
from .records import AttemptRecord, ItemRecord, PendingItem, RunSummary
from .schema import APP_ID, ATTEMPT_OUTCOMES, ITEM_STATUSES, RUN_STATUSES, SCHEMA_VERSION
from .sqlite import RunStore
from .writer import StoreObserver

__all__ = [
    "APP_ID",
    "ATTEMPT_OUTCOMES",
    "ITEM_STATUSES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "ItemRecord",
    "PendingItem",
    "RunStore",
    "RunSummary",
    "StoreError",
    "StoreObserver",
    "strip_secrets",
]
