"""Import litellm once, offline and quiet: no network at import, no banner, no own log handlers.

``import litellm`` costs seconds and ~200 MB, so it happens here on first use only, never on
the import path of ``async_batch_llm``.
"""

from __future__ import annotations

import logging
import os
import threading
from types import ModuleType

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_module: ModuleType | None = None
_warmed = False

# litellm's callback lists: if the application registered any, a warm-up call would be logged.
_CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


def load_litellm() -> ModuleType:
    """The ``litellm`` module, imported and configured on the first call (thread-safe)."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            # The library's one change to the environment, on purpose: litellm reads this
            # variable only from os.environ (at import, and again when its cost map is
            # reloaded), with no setting to pass instead; without it the import fetches
            # the cost map from GitHub. setdefault: a value the user set is kept.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" on stdout
            quiet_litellm_loggers()
            _module = litellm
    return _module


def loaded() -> ModuleType | None:
    """The module if :func:`load_litellm` already ran (no import, no waiting), else None."""
    return _module


def warmed() -> bool:
    """True once :func:`warm_up` ran (or was skipped for good) in this process."""
    return _warmed


def warm_up(model: str) -> None:
    """Pay litellm's first-call cost now, off the event loop, with an offline mock call.

    The first ``acompletion`` of a process spends ~0.7 s of CPU on lazy imports and pydantic
    model rebuilds, blocking the event loop (a frozen dashboard, a burst after the stall, a
    first attempt past a short timeout). Run in a worker thread this costs the loop nothing.
    Skipped when the application registered litellm callbacks: they would log a fake call.
    """
    global _warmed
    litellm = load_litellm()
    with _lock:
        if _warmed:
            return
        _warmed = True
        if any(getattr(litellm, name, None) for name in _CALLBACK_LISTS):
            return
        try:
            litellm.completion(
                model=model,
                messages=[{"role": "user", "content": "warm-up"}],
                mock_response="ok",
            )
        except Exception as exc:  # only a warm-up: the real call reports real problems
            logger.debug("litellm warm-up call failed: %s", type(exc).__name__)


def quiet_litellm_loggers() -> None:
    """Take litellm's stream handlers off its ``LiteLLM*`` loggers so nothing hits the terminal.

    Records still propagate to the application's own handlers; a ``NullHandler`` keeps
    Python's last-resort stderr handler away when the application configured none.
    """
    for name in list(logging.Logger.manager.loggerDict):
        if not name.startswith("LiteLLM"):
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if not isinstance(handler, logging.NullHandler):
                logger.removeHandler(handler)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
