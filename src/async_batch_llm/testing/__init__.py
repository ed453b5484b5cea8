"""Test helpers: mock agents, a scripted fake strategy, a virtual clock, and (re-exported
from :mod:`async_batch_llm.simulator`) the loopback provider simulator."""

from __future__ import annotations

from typing import Any

from .clock import VirtualClock
from .fake import FakeStrategy
from .mocks import MockAgent, MockResult, MockUsage, mock_strategy

_SIMULATOR_NAMES = ("ProviderSimulator", "SimulatorProfile", "profile_from_name")


def __getattr__(name: str) -> Any:
    """The simulator (aiohttp) is imported only when asked for."""
    if name in _SIMULATOR_NAMES:
        from .. import simulator

        return getattr(simulator, name)
    raise AttributeError(f"module 'async_batch_llm.testing' has no attribute {name!r}")


__all__ = [
    "FakeStrategy",
    "MockAgent",
    "MockResult",
    "MockUsage",
    "ProviderSimulator",
    "SimulatorProfile",
    "VirtualClock",
    "mock_strategy",
    "profile_from_name",
]
