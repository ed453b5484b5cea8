"""Transitional names, kept only until ``benchmarks/dashboard_overhead.py`` imports them
from their homes: the model is :class:`abl_tui.model.RunModel`, the runner's surface is
:class:`abl_tui.feeds.RunnerLike`."""

from __future__ import annotations

from .feeds import EventSource, RunnerLike
from .model import RunModel as Dashboard

__all__ = ["Dashboard", "EventSource", "RunnerLike"]
