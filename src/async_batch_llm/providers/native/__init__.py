"""The native HTTP transport: OpenAI-compatible chat completions and Anthropic Messages."""

from .client import NativeClient, redact
from .reply import Reply

__all__ = ["NativeClient", "Reply", "redact"]
