"""Keeping a run's lease for as long as a process runs it: take it, renew it, give it up.

:class:`LeaseKeeper` takes the lease (or waits for a live owner to finish), then stamps a
heartbeat every ``interval`` seconds from a task of the loop, so other processes see the
owner alive; if a heartbeat finds the lease gone (another process took the run over, having
seen no heartbeat for too long), it calls ``on_lost`` so the owner stops at once. See
:mod:`.lease` for the table and what makes an owner dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import StoreError
from .lease import HEARTBEAT_INTERVAL, STALE_AFTER, Lease, LeaseClaim, LeaseHeld, LeaseLost

if TYPE_CHECKING:
    from .sqlite import RunStore

logger = logging.getLogger("async_batch_llm.store")

#: Seconds between tries while waiting for another owner's lease.
WAIT_POLL = 0.25


class LeaseKeeper:
    """Holds at most one lease of ``store`` for ``claim``; every method runs in the loop."""

    def __init__(
        self,
        store: RunStore,
        claim: LeaseClaim | None = None,
        *,
        interval: float = HEARTBEAT_INTERVAL,
        stale_after: float = STALE_AFTER,
        on_lost: Callable[[LeaseLost], None] | None = None,
    ) -> None:
        self.store = store
        self.claim = claim or LeaseClaim()
        self.interval = interval
        self.stale_after = stale_after
        self.on_lost = on_lost
        self.run_id: str | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def acquire(
        self, run_id: str, *, wait: bool = False, on_wait: Callable[[Lease], None] | None = None
    ) -> None:
        """Lease ``run_id``; raises :class:`LeaseHeld` if a live owner has it, or with
        ``wait`` tries again every :data:`WAIT_POLL` s until it is free (``on_wait`` hears
        of each new holder)."""
        seen: str | None = None
        while True:
            try:
                await self.store.acquire_lease(run_id, self.claim, stale_after=self.stale_after)
            except LeaseHeld as held:
                if not wait:
                    raise
                if held.holder.owner != seen and on_wait is not None:
                    on_wait(held.holder)
                seen = held.holder.owner
                await asyncio.sleep(WAIT_POLL)
                continue
            self.adopt(run_id)
            return

    def adopt(self, run_id: str) -> None:
        """Keep the lease of ``run_id`` this claim already holds (e.g. taken with the run)."""
        self.run_id = run_id
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(run_id))

    async def _beat(self, run_id: str) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.store.renew_lease(run_id, self.claim)
            except LeaseLost as lost:
                logger.error("%s", lost)
                if self.on_lost is not None:
                    self.on_lost(lost)
                return
            except StoreError as exc:  # locked or full: the next beat tries again
                logger.warning("run store: could not renew the lease of run %s: %s", run_id, exc)

    async def release(self, *, write: bool = True) -> None:
        """Stop the heartbeat and delete the lease (best effort: a dead owner's lease is
        taken over anyway). ``write=False`` only stops the heartbeat: for a store known to
        refuse writes, whose lease the next owner takes over once this process is gone."""
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        run_id, self.run_id = self.run_id, None
        if run_id is not None and write:
            try:
                await self.store.release_lease(run_id, self.claim)
            except StoreError as exc:
                logger.warning("run store: could not release the lease of run %s: %s", run_id, exc)
