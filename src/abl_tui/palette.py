"""The command palette: each screen offers its own commands, only those that can run now.

A screen lists them in ``palette_commands()`` and names :class:`ScreenCommands` in its
``COMMANDS``; the app adds the ones that apply everywhere through Textual's system commands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from textual.command import DiscoveryHit, Hit, Hits, Provider


class PaletteCommand(NamedTuple):
    """One palette entry: its name, a line of help, and what it does."""

    name: str
    help: str
    callback: Callable[[], Any]


class OffersCommands(Protocol):
    """A screen with palette commands of its own."""

    def palette_commands(self) -> list[PaletteCommand]:
        """The commands that can run now."""
        ...


class ScreenCommands(Provider):
    """The commands of the screen the palette was opened on."""

    def _commands(self) -> list[PaletteCommand]:
        screen: Any = self.screen
        offers = getattr(screen, "palette_commands", None)
        return list(offers()) if callable(offers) else []

    async def discover(self) -> Hits:
        """List every command available now (the palette before anything is typed)."""
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        """Fuzzy-match the available commands against what was typed."""
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
