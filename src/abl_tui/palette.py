"""The dashboard's command palette entries: every action, offered only when it can run."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import Command, DashboardApp


class DashboardCommands(Provider):
    """Retry, retry all, pause/resume, open item, filters, search and runs, by context."""

    def _commands(self) -> list[Command]:
        app = cast("DashboardApp", self.app)
        return app.palette_commands(self.screen)

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
