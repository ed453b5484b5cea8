"""A one-line horizontal gauge for a 0-1 share (the cache-hit rate)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class Gauge(Widget):
    """``████████░░░░ 66.7%``: filled and empty parts styled by component classes."""

    COMPONENT_CLASSES = {"gauge--filled", "gauge--empty"}

    DEFAULT_CSS = """
    Gauge { height: 1; width: 1fr; }
    Gauge > .gauge--filled { color: $success; }
    Gauge > .gauge--empty { color: $foreground 25%; }
    """

    share: reactive[float] = reactive(0.0)

    def render(self) -> Text:
        """The bar fills the width left after the percentage label."""
        share = min(max(self.share, 0.0), 1.0)
        label = f" {share * 100:5.1f}%"
        width = max(self.size.width - len(label), 1)
        filled = round(share * width)
        text = Text(no_wrap=True)
        text.append("█" * filled, self.get_component_rich_style("gauge--filled"))
        text.append("░" * (width - filled), self.get_component_rich_style("gauge--empty"))
        text.append(label)
        return text
