"""MetricsObserver: counters and timing statistics of a run, exportable as JSON or Prometheus."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from .base import BaseObserver, ProcessingEvent

_COMPLETED = ProcessingEvent.ITEM_COMPLETED
_FAILED = ProcessingEvent.ITEM_FAILED
_RATE_LIMIT = ProcessingEvent.RATE_LIMIT_HIT
_COOLDOWN_ENDED = ProcessingEvent.COOLDOWN_ENDED
_RETRY = ProcessingEvent.ITEM_RETRY


class MetricsObserver(BaseObserver):
    """Counts outcomes, rate limits, cooldown time and recent processing times.

    It never awaits, so it costs the run a function call per event it counts.
    """

    wanted_events = frozenset((_COMPLETED, _FAILED, _RETRY, _RATE_LIMIT, _COOLDOWN_ENDED))
    borrows_payload = True  # reads a few fields in place, keeps nothing

    def __init__(self, *, max_processing_samples: int = 100) -> None:
        if max_processing_samples <= 0:
            raise ValueError(f"max_processing_samples must be > 0, got {max_processing_samples!r}")
        self._max_samples = max_processing_samples
        self.reset()

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.items_processed = 0
        self.items_succeeded = 0
        self.items_failed = 0
        self.rate_limits_hit = 0
        self.retries = 0
        self.total_cooldown_time = 0.0
        self.processing_times_sum = 0.0
        self.processing_times_count = 0
        self.error_counts: dict[str, int] = {}
        self._processing_times: deque[float] = deque(maxlen=self._max_samples)

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Count one event (the dispatcher calls this directly: no coroutine per event)."""
        if event is _COMPLETED:
            self.items_processed += 1
            self.items_succeeded += 1
            duration = data.get("duration")
            if duration is not None:
                self.processing_times_sum += duration
                self.processing_times_count += 1
                self._processing_times.append(duration)
        elif event is _FAILED:
            self.items_processed += 1
            self.items_failed += 1
            error_type = data.get("error_type", "unknown")
            self.error_counts[error_type] = self.error_counts.get(error_type, 0) + 1
        elif event is _RETRY:
            self.retries += 1
        elif event is _RATE_LIMIT:
            self.rate_limits_hit += 1
        elif event is _COOLDOWN_ENDED:
            self.total_cooldown_time += data.get("duration", 0.0)

    async def get_metrics(self) -> dict[str, Any]:
        """The counters plus derived averages (a fresh dict)."""
        count = self.processing_times_count
        processed = self.items_processed
        return {
            "items_processed": processed,
            "items_succeeded": self.items_succeeded,
            "items_failed": self.items_failed,
            "rate_limits_hit": self.rate_limits_hit,
            "retries": self.retries,
            "total_cooldown_time": self.total_cooldown_time,
            "error_counts": dict(self.error_counts),
            "processing_times": list(self._processing_times),
            "processing_times_count": count,
            "processing_times_sum": self.processing_times_sum,
            "avg_processing_time": self.processing_times_sum / count if count else 0.0,
            "success_rate": self.items_succeeded / processed if processed else 0.0,
        }

    async def export_dict(self) -> dict[str, Any]:
        """Same as :meth:`get_metrics`."""
        return await self.get_metrics()

    async def export_json(self) -> str:
        """The metrics as a JSON document (without the raw time samples)."""
        metrics = await self.get_metrics()
        metrics.pop("processing_times")
        return json.dumps(metrics, indent=2)

    async def export_prometheus(self) -> str:
        """The metrics in Prometheus text exposition format."""
        metrics = await self.get_metrics()
        lines: list[str] = []
        for name, kind, help_text in (
            ("items_processed", "counter", "Total items processed"),
            ("items_succeeded", "counter", "Total items succeeded"),
            ("items_failed", "counter", "Total items failed"),
            ("rate_limits_hit", "counter", "Total rate limits encountered"),
            ("avg_processing_time", "gauge", "Average processing time in seconds"),
            ("success_rate", "gauge", "Success rate (0.0 to 1.0)"),
            ("total_cooldown_time", "gauge", "Seconds spent in rate-limit cooldown"),
        ):
            lines += [
                f"# HELP async_batch_llm_{name} {help_text}",
                f"# TYPE async_batch_llm_{name} {kind}",
                f"async_batch_llm_{name} {metrics[name]}",
            ]
        if metrics["error_counts"]:
            lines += [
                "# HELP async_batch_llm_errors_total Errors by type",
                "# TYPE async_batch_llm_errors_total counter",
            ]
            for error_type, count in metrics["error_counts"].items():
                label = error_type.replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'async_batch_llm_errors_total{{error_type="{label}"}} {count}')
        return "\n".join(lines) + "\n"
