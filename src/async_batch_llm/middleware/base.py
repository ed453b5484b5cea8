"""Middleware: hooks around each item (before every attempt, after success, on failure)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic

from ..base import LLMWorkItem, TContext, TInput, TOutput, WorkItemResult


class Middleware(ABC, Generic[TInput, TOutput, TContext]):
    """A hook around processing.

    ``before_process`` runs in registration order before every attempt (``None`` skips the
    item); ``after_process`` in reverse order on success; ``on_error`` in order once per
    failed item, the first non-``None`` result replacing the failure.
    """

    @abstractmethod
    async def before_process(
        self, work_item: LLMWorkItem[TInput, TOutput, TContext]
    ) -> LLMWorkItem[TInput, TOutput, TContext] | None:
        """Return the item (possibly changed) to process, or ``None`` to skip it."""

    @abstractmethod
    async def after_process(
        self, result: WorkItemResult[TOutput, TContext]
    ) -> WorkItemResult[TOutput, TContext]:
        """Return the (possibly changed) successful result."""

    @abstractmethod
    async def on_error(
        self, work_item: LLMWorkItem[TInput, TOutput, TContext], error: Exception
    ) -> WorkItemResult[TOutput, TContext] | None:
        """Return a result to use instead of the failure, or ``None``."""


class BaseMiddleware(Middleware[TInput, TOutput, TContext]):
    """Middleware whose hooks change nothing: subclass and override what you need."""

    async def before_process(
        self, work_item: LLMWorkItem[TInput, TOutput, TContext]
    ) -> LLMWorkItem[TInput, TOutput, TContext] | None:
        return work_item

    async def after_process(
        self, result: WorkItemResult[TOutput, TContext]
    ) -> WorkItemResult[TOutput, TContext]:
        return result

    async def on_error(
        self, work_item: LLMWorkItem[TInput, TOutput, TContext], error: Exception
    ) -> WorkItemResult[TOutput, TContext] | None:
        return None
