"""FakeStrategy: a scripted strategy for tests of pipelines, with no provider at all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..base import RetryState, TokenUsage
from ..core.clock import SYSTEM_CLOCK, Clock
from ..llm_strategies import LLMCallStrategy, make_usage
from ..strategies.errors import TokenTrackingError


class FakeRateLimitError(Exception):
    """A 429 as the default classifier sees it, optionally with a Retry-After."""

    status_code = 429

    def __init__(self, message: str = "429 Too Many Requests", retry_after: float | None = None):
        super().__init__(message)
        self.response = _Response({"retry-after": str(retry_after)} if retry_after else {})


class FakeServerError(Exception):
    """A retryable 503."""

    status_code = 503


class FakeBadRequestError(Exception):
    """A non-retryable 400."""

    status_code = 400


class _Response:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.status_code = 429


#: Script steps: "ok", "rate_limit", "rate_limit:<seconds>", "server_error", "bad_request",
#: "timeout" (sleeps past any timeout), "error" (a generic retryable RuntimeError),
#: or an Exception instance to raise.
Step = str | BaseException


class FakeStrategy(LLMCallStrategy[Any]):
    """Answers every prompt after ``latency`` seconds, following a per-prompt script.

    ``script`` maps a prompt (or an item's prompt prefix via ``script_by_prefix``) to the
    outcomes of its successive calls; once a script runs out, calls succeed. Every call is
    logged in ``calls`` as ``(prompt, attempt)``. ``clock`` (a ``VirtualClock``, say) is
    what ``latency`` is waited on; by default the loop's own time.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        script: Mapping[str, Sequence[Step]] | None = None,
        default_script: Sequence[Step] = (),
        usage: TokenUsage | None = None,
        failed_usage: TokenUsage | None = None,
        response: Callable[[str], Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.latency = latency
        self.clock = clock or SYSTEM_CLOCK
        self.script = {prompt: list(steps) for prompt, steps in (script or {}).items()}
        self.default_script = list(default_script)
        self.usage = usage or make_usage(10, 5)
        self.failed_usage = failed_usage
        self.response = response
        self.calls: list[tuple[str, int]] = []
        self.prepare_count = 0
        self.cleanup_count = 0
        self.errors: list[tuple[str, int]] = []
        self._progress: dict[str, int] = {}

    async def prepare(self) -> None:
        self.prepare_count += 1

    async def cleanup(self) -> None:
        self.cleanup_count += 1

    async def on_error(
        self, exception: Exception, attempt: int, state: RetryState | None = None
    ) -> None:
        self.errors.append((type(exception).__name__, attempt))

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[Any, TokenUsage]:
        self.calls.append((prompt, attempt))
        steps = self.script.get(prompt, self.default_script)
        done = self._progress.get(prompt, 0)
        self._progress[prompt] = done + 1
        step: Step = steps[done] if done < len(steps) else "ok"
        if self.latency:
            await self.clock.sleep(self.latency)
        if step != "ok":
            await self._fail(step)
        output = self.response(prompt) if self.response else f"fake:{prompt}"
        return output, dict(self.usage)  # type: ignore[return-value]

    async def _fail(self, step: Step) -> None:
        if isinstance(step, BaseException):
            raise step
        name, _, arg = step.partition(":")
        if name == "rate_limit":
            raise FakeRateLimitError(retry_after=float(arg) if arg else None)
        if name == "timeout":
            await asyncio.sleep(3600)  # real time: the engine's per-attempt timeout ends it
        if name == "server_error":
            error: Exception = FakeServerError("503 Service Unavailable")
        elif name == "bad_request":
            error = FakeBadRequestError("400 Bad Request: invalid input")
        elif name == "error":
            error = RuntimeError("scripted failure")
        else:
            raise ValueError(f"unknown FakeStrategy step {step!r}")
        if self.failed_usage:
            raise TokenTrackingError(str(error), token_usage=self.failed_usage) from error
        raise error
