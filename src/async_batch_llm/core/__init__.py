"""Core components: configuration and the structural types the engine accepts."""

from .config import ProcessorConfig, RateLimitConfig, RetryConfig
from .protocols import AgentLike, LLMModel, ManagedLLMModel, ResultLike, TOutput, UsageLike

__all__ = [
    "AgentLike",
    "LLMModel",
    "ManagedLLMModel",
    "ProcessorConfig",
    "RateLimitConfig",
    "ResultLike",
    "RetryConfig",
    "TOutput",
    "UsageLike",
]
