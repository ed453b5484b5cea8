"""The loopback provider simulator: OpenAI- and Anthropic-compatible, with their rate-limit
headers, batch APIs, seeded faults and a ledger of every call it answered.

Production code uses it for ``simulated/<profile>`` models (the demo runs on it); tests use
it as the provider whose ledger is the truth about what was paid. Run it standalone with
``python -m async_batch_llm.simulator --port 8765 --profile demo``. The server itself (and
aiohttp) is imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from .profiles import BUILTIN_PROFILES, SIMULATED_PREFIX, SimulatorProfile, profile_from_name

__all__ = [
    "BUILTIN_PROFILES",
    "SIMULATED_PREFIX",
    "ProviderSimulator",
    "SimulatorProfile",
    "profile_from_name",
]


def __getattr__(name: str) -> Any:
    """``ProviderSimulator`` on first use: the server pulls in aiohttp."""
    if name == "ProviderSimulator":
        from .server import ProviderSimulator

        return ProviderSimulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
