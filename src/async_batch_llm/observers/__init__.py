"""Observers of processing events."""

from .base import BaseObserver, ProcessingEvent, ProcessorObserver
from .metrics import MetricsObserver

__all__ = ["BaseObserver", "MetricsObserver", "ProcessingEvent", "ProcessorObserver"]
