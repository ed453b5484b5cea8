"""The user's saved choices (today: the dashboard theme), in a small JSON file.

The file is ``$XDG_CONFIG_HOME/abl/preferences.json`` (``~/.config/abl/...`` when the variable
is unset), next to the user themes folder. A missing, unreadable or malformed file reads as
"nothing saved"; a failed save is logged, never fatal: a preference is not worth a crash.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FILE_NAME = "preferences.json"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/abl``, else ``~/.config/abl``."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".config"
    return root / "abl"


class Preferences:
    """Read and write the preferences file (``path`` defaults to :func:`config_dir`'s)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else config_dir() / FILE_NAME

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def theme(self) -> str | None:
        """The saved theme name, if any."""
        value = self._read().get("theme")
        return value if isinstance(value, str) and value else None

    def save_theme(self, name: str) -> None:
        """Remember ``name`` as the theme the next start uses."""
        data = self._read()
        if data.get("theme") == name:
            return
        data["theme"] = name
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            temporary.replace(self.path)  # a reader never sees half a file
        except OSError as exc:
            logger.warning("could not save the theme to %s: %s", self.path, exc)
