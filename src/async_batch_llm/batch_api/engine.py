"""ProviderBatchRunner: work items through the provider batch APIs, durably, results streamed.

One call, :meth:`ProviderBatchRunner.outcomes`, takes the items still to do (all of them on a
first run; on a resume, those not done) and yields one :class:`BatchItemOutcome` per item.

- Items are cut into chunks within the provider's limits; each chunk is journaled (ids,
  then file and batch ids) before and after it is sent, so a run killed at any instant
  resumes by polling the same batches. An item journaled in a chunk is never put in another
  one; a chunk whose submission was cut short is looked for at the provider (OpenAI: by the
  chunk id in the batch's metadata; Anthropic: by size and creation time) before it is
  released and its items planned again.
- Batches are polled with backoff; past ``batch_deadline`` a batch is cancelled. When a
  batch ends, its results are read and yielded at once (other batches keep running).
- On a resume, an item whose chunk is still open waits for that batch; an item whose chunk
  has ended is read again from the batch's results (so nothing is lost when a kill came
  between reading results and committing them): results are delivered at least once and
  keyed by item id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..base import LLMWorkItem
from ..errors import AblError
from ..providers.batch import BatchClient, BatchTarget, ProviderBatch, batch_client, batch_target
from ..providers.litellm_errors import LiteLLMErrorClassifier
from ..providers.provider_errors import ProviderError
from .config import BatchApiConfig
from .journal import BatchJournal, ChunkRecord, custom_id, position_of
from .outcome import BatchItemOutcome, ItemWhere, not_run_outcome, outcome_of
from .planner import ChunkPlanner, PlannedChunk

__all__ = ["BatchSubmitError", "ProviderBatchRunner"]

logger = logging.getLogger(__name__)

_PAGE = 1000
_CLASSIFIER = LiteLLMErrorClassifier()
_SUBMIT_BACKOFF = 2.0


class BatchSubmitError(AblError, RuntimeError):
    """A chunk could not be submitted (a non-transient refusal, or transient ones to the end).

    The chunk stays journaled as planned: a resume looks for it at the provider first.
    """


@dataclass(slots=True, eq=False)
class _Live:
    """A submitted chunk being polled."""

    record: ChunkRecord
    target: BatchTarget
    client: BatchClient
    wanted: set[str] | None
    """Item ids to deliver (a resumed chunk); None: all of them."""
    interval: float
    next_poll: float
    delivered: set[str] = field(default_factory=set)


@dataclass(slots=True, eq=False)
class _Resumed:
    """Items of the input that belong to a chunk journaled by an earlier run."""

    target: BatchTarget
    ids: set[str] = field(default_factory=set)
    held: list[LLMWorkItem[Any, Any, Any]] = field(default_factory=list)
    """Whole items, kept only for chunks not yet submitted (they may need planning again)."""


@dataclass(slots=True, eq=False)
class _Run:
    journal_chunks: dict[str, ChunkRecord]
    live: dict[str, _Live] = field(default_factory=dict)
    resumed: dict[str, _Resumed] = field(default_factory=dict)
    planner: ChunkPlanner = field(default_factory=ChunkPlanner)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    intake_done: bool = False


async def _pages(
    items: Iterable[LLMWorkItem[Any, Any, Any]] | AsyncIterable[LLMWorkItem[Any, Any, Any]],
) -> AsyncIterator[list[LLMWorkItem[Any, Any, Any]]]:
    page: list[LLMWorkItem[Any, Any, Any]] = []
    if isinstance(items, AsyncIterable):
        async for item in items:
            page.append(item)
            if len(page) >= _PAGE:
                yield page
                page = []
    else:
        for item in items:
            page.append(item)
            if len(page) >= _PAGE:
                yield page
                page = []
    if page:
        yield page


class ProviderBatchRunner:
    """Runs work items through OpenAI's and Anthropic's batch APIs; see the module.

    ``on_status`` is called (on the loop, must not block) with a chunk's
    :class:`ChunkRecord` whenever it is planned, submitted, polled, cancelled or ended:
    what a dashboard's batch-jobs panel shows.
    """

    def __init__(
        self,
        journal: BatchJournal,
        config: BatchApiConfig | None = None,
        *,
        on_status: Callable[[ChunkRecord], None] | None = None,
    ) -> None:
        self.journal = journal
        self.config = config or BatchApiConfig()
        self._on_status = on_status
        self._targets: dict[int, BatchTarget] = {}
        self._clients: dict[tuple[str, str, str], BatchClient] = {}

    # ------------------------------------------------------------------ public

    async def outcomes(
        self,
        items: Iterable[LLMWorkItem[Any, Any, Any]] | AsyncIterable[LLMWorkItem[Any, Any, Any]],
    ) -> AsyncIterator[BatchItemOutcome]:
        """One outcome per item of ``items`` (and per item of a resumed chunk it names)."""
        chunks = await self.journal.chunks()
        run = _Run({c.chunk_id: c for c in chunks})
        intake = asyncio.ensure_future(self._intake(items, run))
        try:
            while True:
                async for outcome in self._poll_round(run):
                    yield outcome
                if intake.done():
                    intake.result()  # an intake error ends the run here
                    if not run.live:
                        return
                await self._wait(run, intake)
        finally:
            if not intake.done():
                intake.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await intake
            await self.close()

    async def close(self) -> None:
        """Close the HTTP sessions of the batch clients."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    # ------------------------------------------------------------------ intake

    async def _target(self, strategy: Any) -> BatchTarget:
        target = self._targets.get(id(strategy))
        if target is None:
            target = self._targets[id(strategy)] = await batch_target(strategy)
        return target

    def _client(self, target: BatchTarget) -> BatchClient:
        client = self._clients.get(target.key)
        if client is None:
            client = self._clients[target.key] = batch_client(
                target,
                limits=self.config.limits,
                completion_window=self.config.completion_window,
            )
        return client

    async def _intake(
        self,
        items: Iterable[LLMWorkItem[Any, Any, Any]] | AsyncIterable[LLMWorkItem[Any, Any, Any]],
        run: _Run,
    ) -> None:
        """Plan and submit new items; note those of journaled chunks; then adopt those."""
        async for page in _pages(items):
            assigned = await self.journal.assignments([item.item_id for item in page])
            for item in page:
                target = await self._target(item.strategy)
                chunk_id = assigned.get(item.item_id)
                if chunk_id is None:
                    await self._plan(item, target, run)
                else:
                    self._note_resumed(item, target, run.journal_chunks[chunk_id], run)
        for chunk_id, resumed in run.resumed.items():
            await self._adopt(run.journal_chunks[chunk_id], resumed, run)
        for chunk in run.planner.flush():
            await self._submit_new(chunk, run)
        run.intake_done = True
        run.wake.set()

    async def _plan(self, item: LLMWorkItem[Any, Any, Any], target: BatchTarget, run: _Run) -> None:
        closed = run.planner.add(item.item_id, item.prompt, target, self._client(target))
        if closed is not None:
            await self._submit_new(closed, run)

    def _note_resumed(
        self, item: LLMWorkItem[Any, Any, Any], target: BatchTarget, record: ChunkRecord, run: _Run
    ) -> None:
        resumed = run.resumed.get(record.chunk_id)
        if resumed is None:
            resumed = run.resumed[record.chunk_id] = _Resumed(target)
        resumed.ids.add(item.item_id)
        if record.state in ("planned", "uploaded"):
            resumed.held.append(item)

    async def _adopt(self, record: ChunkRecord, resumed: _Resumed, run: _Run) -> None:
        """Take up a chunk an earlier run journaled: find, resubmit, poll or re-read it."""
        client = self._client(resumed.target)
        if record.state in ("planned", "uploaded"):
            claimed = frozenset(c.batch_id for c in run.journal_chunks.values() if c.batch_id)
            found = await client.find(
                record.chunk_id,
                since=record.planned_at,
                total=record.request_count,
                exclude=claimed,
            )
            if found is not None:
                record = await self._submitted(record, found)
            elif record.state == "uploaded" and record.input_file_id:
                record = await self._send(record, client, [])
            else:
                await self.journal.release(record.chunk_id, self.config.clock())
                logger.info("chunk %s was never submitted: planned again", record.chunk_id)
                for item in resumed.held:
                    await self._plan(item, resumed.target, run)
                return
        self._go_live(record, resumed.target, client, resumed.ids, run, poll_now=True)

    # ------------------------------------------------------------------ submission

    async def _submit_new(self, chunk: PlannedChunk, run: _Run) -> None:
        now = self.config.clock()
        record = ChunkRecord(
            chunk_id=chunk.chunk_id,
            provider=chunk.target.provider,
            model=chunk.target.strategy.model,
            request_count=len(chunk.item_ids),
            request_bytes=chunk.size,
            planned_at=now,
            updated_at=now,
        )
        await self.journal.record_planned(record, chunk.item_ids)
        self._emit(record)
        record = await self._send(record, chunk.client, chunk.lines)
        self._go_live(record, chunk.target, chunk.client, None, run, poll_now=False)

    async def _send(
        self, record: ChunkRecord, client: BatchClient, lines: list[bytes]
    ) -> ChunkRecord:
        """Submit a chunk (transient errors retried, after looking for the batch first)."""
        current = record

        async def uploaded(file_id: str) -> None:
            nonlocal current
            current = current.replace(
                state="uploaded", input_file_id=file_id, updated_at=self.config.clock()
            )
            await self.journal.record(current)

        attempts = self.config.submit_attempts
        for attempt in range(1, attempts + 1):
            try:
                batch = await client.submit(
                    current.chunk_id, lines, file_id=current.input_file_id, on_file=uploaded
                )
                return await self._submitted(current, batch)
            except ProviderError as exc:
                info = _CLASSIFIER.classify(exc)
                if not info.is_retryable or attempt == attempts:
                    raise BatchSubmitError(
                        f"chunk {current.chunk_id} ({current.request_count} requests) could not "
                        f"be submitted: {exc}"
                    ) from exc
                logger.warning("submitting chunk %s failed (%s); retrying", current.chunk_id, exc)
            await self.config.sleep(min(_SUBMIT_BACKOFF**attempt, self.config.max_poll_interval))
            try:  # the batch may exist although its answer was lost
                found = await client.find(
                    current.chunk_id, since=current.planned_at, total=current.request_count
                )
            except ProviderError as exc:
                logger.warning("looking for chunk %s failed (%s)", current.chunk_id, exc)
                continue
            if found is not None:
                return await self._submitted(current, found)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _submitted(self, record: ChunkRecord, batch: ProviderBatch) -> ChunkRecord:
        now = self.config.clock()
        deadline = self.config.batch_deadline
        record = record.replace(
            state="submitted",
            batch_id=batch.batch_id,
            input_file_id=batch.input_file_id or record.input_file_id,
            submitted_at=batch.created_at or now,
            expires_at=batch.expires_at,
            deadline_at=(batch.created_at or now) + deadline if deadline else None,
            provider_status=batch.provider_status,
            updated_at=now,
        )
        await self.journal.record(record)
        self._emit(record)
        return record

    def _go_live(
        self,
        record: ChunkRecord,
        target: BatchTarget,
        client: BatchClient,
        wanted: set[str] | None,
        run: _Run,
        *,
        poll_now: bool,
    ) -> None:
        interval = self.config.poll_interval
        first = 0.0 if poll_now else self.config.clock() + interval
        run.live[record.chunk_id] = _Live(record, target, client, wanted, interval, first)
        run.wake.set()

    # ------------------------------------------------------------------ polling

    async def _poll_round(self, run: _Run) -> AsyncIterator[BatchItemOutcome]:
        """Poll every chunk that is due; yield the outcomes of those that ended."""
        for live in list(run.live.values()):
            if live.next_poll > self.config.clock():
                continue
            try:
                batch = await self._poll(live)
                if batch.ended:
                    async for outcome in self._read(live, batch):
                        yield outcome
                    await self._ended(live, batch, run)
            except ProviderError as exc:
                if not _CLASSIFIER.classify(exc).is_retryable:
                    raise  # a 401, a 404 for the batch...: no poll will do better
                logger.warning("batch %s: %s (trying again)", live.record.batch_id, exc)
                live.next_poll = self.config.clock() + live.interval

    async def _poll(self, live: _Live) -> ProviderBatch:
        record, client = live.record, live.client
        assert record.batch_id is not None
        batch = await client.get(record.batch_id)
        now = self.config.clock()
        if (
            not batch.ended
            and record.deadline_at is not None
            and now >= record.deadline_at
            and record.cancel_requested_at is None
        ):
            logger.info("batch %s passed its deadline: cancelling it", record.batch_id)
            batch = await client.cancel(record.batch_id)
            record = record.replace(cancel_requested_at=now)
        changed = (batch.provider_status, batch.succeeded, batch.failed) != (
            record.provider_status,
            record.succeeded,
            record.failed,
        )
        state = (
            "cancelling"
            if record.cancel_requested_at or batch.state == "cancelling"
            else "submitted"
        )
        record = record.replace(
            state=state,
            provider_status=batch.provider_status,
            succeeded=batch.succeeded,
            failed=batch.failed,
            expires_at=batch.expires_at or record.expires_at,
            updated_at=now,
        )
        if changed or record.cancel_requested_at != live.record.cancel_requested_at:
            await self.journal.record(record)
            live.interval = self.config.poll_interval
        else:
            live.interval = min(
                live.interval * self.config.poll_backoff, self.config.max_poll_interval
            )
        live.record = record
        self._emit(record)
        next_poll = now + live.interval
        if record.deadline_at is not None and record.cancel_requested_at is None:
            next_poll = min(next_poll, record.deadline_at)
        live.next_poll = next_poll
        return batch

    async def _read(self, live: _Live, batch: ProviderBatch) -> AsyncIterator[BatchItemOutcome]:
        """The outcomes of an ended batch for the wanted items not yet delivered."""
        record = live.record
        ids = await self.journal.chunk_items(record.chunk_id)
        duration = max(0.0, self.config.clock() - (record.submitted_at or record.planned_at))

        def where(item_id: str, custom: str) -> ItemWhere:
            return ItemWhere(item_id, record.chunk_id, record.batch_id, custom, duration)

        async for line in live.client.results(batch):
            position = position_of(record.chunk_id, line.custom_id)
            if position is None or position >= len(ids):
                logger.warning("batch %s: unknown custom_id %r", record.batch_id, line.custom_id)
                continue
            item_id = ids[position]
            if not self._wants(live, item_id):
                continue
            live.delivered.add(item_id)
            yield outcome_of(line, live.target, where(item_id, line.custom_id))
        kind = "failed" if batch.refused else "missing"
        message = "; ".join(batch.errors) or f"no result in provider batch {record.batch_id}"
        for position, item_id in enumerate(ids):
            if self._wants(live, item_id):
                live.delivered.add(item_id)
                custom = custom_id(record.chunk_id, position)
                yield not_run_outcome(where(item_id, custom), live.target, kind, message)

    @staticmethod
    def _wants(live: _Live, item_id: str) -> bool:
        if item_id in live.delivered:
            return False
        return live.wanted is None or item_id in live.wanted

    async def _ended(self, live: _Live, batch: ProviderBatch, run: _Run) -> None:
        now = self.config.clock()
        record = live.record.replace(state="ended", ended_at=now, updated_at=now)
        await self.journal.record(record)
        self._emit(record)
        run.live.pop(record.chunk_id, None)

    async def _wait(self, run: _Run, intake: asyncio.Future[None]) -> None:
        """Sleep until the next poll is due, new chunks go live, or the intake ends."""
        now = self.config.clock()
        due = min((live.next_poll for live in run.live.values()), default=None)
        delay = self.config.poll_interval if due is None else max(0.0, due - now)
        if delay <= 0 or run.wake.is_set():
            run.wake.clear()
            return
        sleeper = asyncio.ensure_future(self.config.sleep(delay))
        waker = asyncio.ensure_future(run.wake.wait())
        waiting: set[asyncio.Future[Any]] = {sleeper, waker}
        if not intake.done():
            waiting.add(intake)
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()

    def _emit(self, record: ChunkRecord) -> None:
        if self._on_status is not None:
            try:
                self._on_status(record)
            except Exception:  # an observer never stops the run
                logger.exception("on_status raised")
