"""One parsed provider reply, protocol-neutral."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Reply"]


class Reply(NamedTuple):
    """Text, tokens and id of one reply; ``prompt_tokens`` counts cache reads and writes."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    response_id: str | None
