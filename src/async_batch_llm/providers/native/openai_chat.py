"""OpenAI-compatible chat completions on the wire: the request body and the parsed reply."""

from __future__ import annotations

from typing import Any

from ..provider_errors import MalformedResponseError
from .reply import Reply

__all__ = ["parse_reply", "request_body"]


def request_body(
    wire_model: str, messages: list[dict[str, str]], options: dict[str, Any]
) -> dict[str, Any]:
    """``{"model", "messages", **options}``: options (temperature, response_format...) as given."""
    return {"model": wire_model, "messages": messages, **options}


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def parse_reply(data: Any) -> Reply:
    """The first choice's text, usage and id of a ``chat.completion`` object.

    A body with no ``choices``, an empty list or ``content: null`` is a
    :class:`MalformedResponseError` (retried): an empty answer is not an answer.
    """
    try:
        choices = data["choices"]
        content = choices[0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise MalformedResponseError(
            "the provider's reply has no choices[0].message.content"
        ) from None
    if not isinstance(content, str):
        raise MalformedResponseError("the provider's reply has no text (content is null)")
    usage = data.get("usage")
    prompt = completion = cached = 0
    if isinstance(usage, dict):
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            cached = _int(details.get("cached_tokens"))
        if not cached:
            cached = _int(usage.get("prompt_cache_hit_tokens"))  # DeepSeek's own name
    response_id = data.get("id")
    return Reply(
        content,
        prompt,
        completion,
        min(cached, prompt) if prompt else cached,
        0,
        response_id if isinstance(response_id, str) else None,
    )
