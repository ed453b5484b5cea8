"""The dashboard's widgets: each reads the pure run state and never touches the engine."""

from .batch_jobs import BatchJobsPanel
from .counts_strip import CountsStrip
from .event_log import EventLog
from .failed_panel import FailedPanel
from .failed_table import FailedTable
from .gauge import Gauge
from .rate_limits import RateLimitsPanel
from .run_header import RunHeader
from .run_progress import RunProgress
from .throughput import ThroughputPanel
from .tokens_panel import TokensPanel
from .workers_table import WorkersTable

__all__ = [
    "BatchJobsPanel",
    "CountsStrip",
    "EventLog",
    "FailedPanel",
    "FailedTable",
    "Gauge",
    "RateLimitsPanel",
    "RunHeader",
    "RunProgress",
    "ThroughputPanel",
    "TokensPanel",
    "WorkersTable",
]
