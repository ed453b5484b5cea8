"""Configuration: defaults as documented, validation naming the field, legacy keywords."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest

from async_batch_llm import (
    FrameworkTimeoutError,
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
    RateLimitConfig,
    RetryConfig,
)
from async_batch_llm.testing import FakeStrategy

# --------------------------------------------------------------------------- defaults


def test_retry_config_defaults() -> None:
    cfg = RetryConfig()
    assert (cfg.max_attempts, cfg.initial_wait, cfg.max_wait) == (3, 1.0, 60.0)
    assert (cfg.exponential_base, cfg.jitter) == (2.0, True)


def test_rate_limit_config_defaults() -> None:
    cfg = RateLimitConfig()
    assert cfg.cooldown_seconds == 300.0
    assert cfg.slow_start_items == 50
    assert cfg.slow_start_initial_delay == 2.0
    assert cfg.slow_start_final_delay == 0.1
    assert cfg.backoff_multiplier == 1.5
    assert cfg.max_rate_limit_retries == 20


def test_processor_config_fields_and_defaults_as_reference() -> None:
    names = [f.name for f in dataclasses.fields(ProcessorConfig)]
    assert names[:11] == [
        "max_workers",
        "timeout_per_item",
        "post_processor_timeout",
        "retry",
        "rate_limit",
        "max_requests_per_minute",
        "progress_interval",
        "progress_callback_timeout",
        "enable_detailed_logging",
        "max_queue_size",
        "dry_run",
    ]
    cfg = ProcessorConfig()
    assert cfg.max_workers == 5
    assert cfg.timeout_per_item == 120.0
    assert cfg.post_processor_timeout == 90.0
    assert cfg.retry == RetryConfig()
    assert cfg.rate_limit == RateLimitConfig()
    assert cfg.max_requests_per_minute is None
    assert cfg.progress_interval == 10
    assert cfg.progress_callback_timeout == 5.0
    assert cfg.enable_detailed_logging is False
    assert cfg.max_queue_size == 0
    assert cfg.dry_run is False


def test_processor_configs_do_not_share_sub_configs() -> None:
    first, second = ProcessorConfig(), ProcessorConfig()
    assert first.retry is not second.retry
    assert first.rate_limit is not second.rate_limit


# --------------------------------------------------------------------------- validation

INVALID_PROCESSOR = [
    ("max_workers", 0),
    ("max_workers", -3),
    ("max_workers", 1.5),
    ("max_workers", True),
    ("timeout_per_item", 0),
    ("timeout_per_item", -1.0),
    ("timeout_per_item", float("nan")),
    ("post_processor_timeout", 0),
    ("post_processor_timeout", -5),
    ("max_requests_per_minute", 0),
    ("max_requests_per_minute", -60),
    ("max_tokens_per_minute", 0),
    ("max_tokens_per_minute", -1000),
    ("progress_interval", 0),
    ("progress_interval", -1),
    ("progress_callback_timeout", 0),
    ("progress_callback_timeout", -1.0),
    ("max_queue_size", -1),
    ("observer_timeout", 0),
    ("observer_timeout", -1),
    ("retry", "fast"),
    ("rate_limit", {"cooldown_seconds": 1}),
]


@pytest.mark.parametrize(("field", "value"), INVALID_PROCESSOR)
def test_processor_config_rejects_invalid_value_naming_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        ProcessorConfig(**{field: value})


INVALID_RETRY = [
    ("max_attempts", 0),
    ("max_attempts", -1),
    ("max_attempts", 2.5),
    ("initial_wait", -0.1),
    ("initial_wait", 0),
    ("max_wait", -1.0),
    ("exponential_base", 0.5),
    ("exponential_base", -2),
]


@pytest.mark.parametrize(("field", "value"), INVALID_RETRY)
def test_retry_config_rejects_invalid_value_naming_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        RetryConfig(**{field: value})


def test_retry_config_rejects_max_wait_below_initial_wait() -> None:
    with pytest.raises(ValueError, match="max_wait"):
        RetryConfig(initial_wait=10.0, max_wait=1.0)


INVALID_RATE_LIMIT = [
    ("cooldown_seconds", -1.0),
    ("slow_start_items", -1),
    ("slow_start_items", 1.5),
    ("slow_start_initial_delay", -0.5),
    ("slow_start_final_delay", -0.5),
    ("backoff_multiplier", 0.5),
    ("max_rate_limit_retries", -1),
    ("max_cooldown_seconds", 0),
    ("max_cooldown_seconds", -5.0),
]


@pytest.mark.parametrize(("field", "value"), INVALID_RATE_LIMIT)
def test_rate_limit_config_rejects_invalid_value_naming_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        RateLimitConfig(**{field: value})


def test_valid_edge_values_accepted() -> None:
    ProcessorConfig(
        max_workers=1,
        progress_interval=1,
        max_queue_size=0,
        max_requests_per_minute=0.5,
        max_tokens_per_minute=1,
        progress_callback_timeout=None,
    )
    RetryConfig(max_attempts=1, initial_wait=0.001, max_wait=0.001, exponential_base=1.0)
    RateLimitConfig(cooldown_seconds=0.0, slow_start_items=0, max_rate_limit_retries=0)


def test_set_max_workers_rejects_invalid_count() -> None:
    processor = ParallelBatchProcessor(config=ProcessorConfig())
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="max_workers"):
            processor.set_max_workers(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- legacy keywords


def test_legacy_max_workers_warns_takes_effect_and_leaves_config_alone() -> None:
    cfg = ProcessorConfig(max_workers=2)
    with pytest.warns(DeprecationWarning, match="max_workers") as caught:
        processor = ParallelBatchProcessor(max_workers=7, config=cfg)
    assert processor.config.max_workers == 7
    assert cfg.max_workers == 2
    # The warning points at the caller, not at the engine's internals.
    assert caught[0].filename == __file__


def test_legacy_timeout_per_item_warns_and_takes_effect() -> None:
    cfg = ProcessorConfig()
    with pytest.warns(DeprecationWarning, match="timeout_per_item"):
        processor = ParallelBatchProcessor(timeout_per_item=0.25, config=cfg)
    assert processor.config.timeout_per_item == 0.25
    assert cfg.timeout_per_item == 120.0


def test_legacy_rate_limit_cooldown_warns_and_leaves_config_alone() -> None:
    rate_limit = RateLimitConfig(cooldown_seconds=300.0, slow_start_items=0)
    cfg = ProcessorConfig(rate_limit=rate_limit)
    with pytest.warns(DeprecationWarning, match="rate_limit_cooldown"):
        processor = ParallelBatchProcessor(rate_limit_cooldown=0.03, config=cfg)
    assert processor.config.rate_limit.cooldown_seconds == 0.03
    assert cfg.rate_limit.cooldown_seconds == 300.0
    assert rate_limit.cooldown_seconds == 300.0
    assert cfg.rate_limit is rate_limit


def test_legacy_keywords_without_config_use_defaults_otherwise() -> None:
    with pytest.warns(DeprecationWarning):
        processor = ParallelBatchProcessor(max_workers=3)
    assert processor.config.max_workers == 3
    assert processor.config.timeout_per_item == ProcessorConfig().timeout_per_item


def test_no_warning_without_legacy_keywords() -> None:
    cfg = ProcessorConfig(max_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor = ParallelBatchProcessor(config=cfg)
    assert processor.config.max_workers == 2


def test_legacy_keyword_invalid_value_raises_value_error() -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="max_workers"):
        ParallelBatchProcessor(max_workers=0)


async def test_legacy_keywords_take_effect_in_a_run(recorder: Any) -> None:
    cfg = ProcessorConfig(
        retry=RetryConfig(max_attempts=1),
        rate_limit=RateLimitConfig(cooldown_seconds=300.0, slow_start_items=0),
    )
    strategy = FakeStrategy(script={"slow": ["timeout"], "limited": ["rate_limit"]})
    with pytest.warns(DeprecationWarning):
        processor = ParallelBatchProcessor(
            max_workers=3,
            timeout_per_item=0.05,
            rate_limit_cooldown=0.02,
            config=cfg,
            observers=[recorder],
        )
    async with processor:
        await processor.add_work(LLMWorkItem("slow", strategy, "slow"))
        await processor.add_work(LLMWorkItem("limited", strategy, "limited"))
        result = await processor.process_all()

    by_id = {r.item_id: r for r in result.results}
    assert recorder.of(ProcessingEvent.BATCH_STARTED)[0]["max_workers"] == 3
    assert not by_id["slow"].success
    assert FrameworkTimeoutError.__name__ in (by_id["slow"].error or "")
    assert "0.05" in (by_id["slow"].error or "")
    assert by_id["limited"].success
    assert [d["duration"] for d in recorder.of(ProcessingEvent.COOLDOWN_STARTED)] == [0.02]
    assert cfg.timeout_per_item == 120.0 and cfg.max_workers == 5
