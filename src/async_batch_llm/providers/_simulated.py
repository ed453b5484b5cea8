"""``simulated/<profile>`` model names: one shared in-process provider simulator per profile.

The simulator serves from a daemon thread (its own event loop), so any number of strategies
and event loops in the process can call it. ``ABL_SIMULATOR_SEED`` sets its seed.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import TYPE_CHECKING

from ..simulator.profiles import SIMULATED_PREFIX, profile_from_name

if TYPE_CHECKING:
    from ..simulator.server import ProviderSimulator

SEED_ENV = "ABL_SIMULATOR_SEED"
SIMULATOR_API_KEY = "sim-key"  # the simulator ignores keys; the openai SDK insists on one

_lock = threading.Lock()
_simulators: dict[str, ProviderSimulator] = {}
_atexit_registered = False


def simulated_profile(model: str) -> str | None:
    """The profile name of a ``simulated/<profile>`` model (validated), else None."""
    if not model.startswith(SIMULATED_PREFIX):
        return None
    return profile_from_name(model).name  # ValueError naming the known profiles


def routed_model(profile: str) -> str:
    """The litellm model name calls to ``simulated/<profile>`` are sent as."""
    return f"openai/sim-{profile}"


def simulator_seed() -> int:
    """The seed from ``ABL_SIMULATOR_SEED`` (0 when unset)."""
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be an integer, got {raw!r}") from None


def shared_simulator(profile: str) -> ProviderSimulator:
    """The running simulator of ``profile`` in this process, started on first use (blocking)."""
    global _atexit_registered
    with _lock:
        simulator = _simulators.get(profile)
        if simulator is None:
            from ..simulator.server import ProviderSimulator

            simulator = ProviderSimulator(profile_from_name(profile), seed=simulator_seed())
            simulator.start_in_thread()
            if not _atexit_registered:
                atexit.register(stop_shared_simulators)
                _atexit_registered = True
            _simulators[profile] = simulator
    return simulator


def stop_shared_simulators() -> None:
    """Stop every shared simulator (at exit, or in tests that want a fresh ledger)."""
    with _lock:
        simulators = list(_simulators.values())
        _simulators.clear()
    for simulator in simulators:
        simulator.stop_thread()
