"""Import litellm once, offline and quiet: no network at import, no banner, no own log handlers.

``import litellm`` costs seconds and ~200 MB, so it happens here on first use only, never on
the import path of ``async_batch_llm``.
"""

from __future__ import annotations

import logging
import os
import threading
from types import ModuleType

_lock = threading.Lock()
_module: ModuleType | None = None


def load_litellm() -> ModuleType:
    """The ``litellm`` module, imported and configured on the first call (thread-safe)."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            # Before the import, or litellm fetches its cost map from GitHub at import time.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" on stdout
            quiet_litellm_loggers()
            _module = litellm
    return _module


def loaded() -> ModuleType | None:
    """The module if :func:`load_litellm` already ran (no import, no waiting), else None."""
    return _module


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
