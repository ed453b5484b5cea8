"""abl-tui: the terminal dashboard and command line for async_batch_llm runs."""

from async_batch_llm import __version__

__all__ = ["__version__"]
