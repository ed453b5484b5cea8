"""What one attempt tells an observer beyond its outcome: the HTTP status and the provider's
rate-limit snapshot, in the plain shapes event payloads carry (see ``ITEM_RETRY``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..strategies.errors import http_status

#: The fields of a rate-limit snapshot, as :class:`~async_batch_llm.providers.limits.
#: ProviderLimits` names them (``*_reset_s``: seconds from the answer until that budget is full).
LIMIT_FIELDS = (
    "requests_limit",
    "requests_remaining",
    "requests_reset_s",
    "tokens_limit",
    "tokens_remaining",
    "tokens_reset_s",
)


def limits_snapshot(limits: Any) -> dict[str, Any] | None:
    """The limits a provider declared (``ProviderLimits`` or a mapping) as a plain dict of the
    fields it said; None when it said nothing."""
    if limits is None:
        return None
    if isinstance(limits, Mapping):
        said = {name: limits.get(name) for name in LIMIT_FIELDS}
    else:
        said = {name: getattr(limits, name, None) for name in LIMIT_FIELDS}
    snapshot = {name: value for name, value in said.items() if value is not None}
    return snapshot or None


def failure_facts(error: BaseException) -> tuple[int | None, dict[str, Any] | None]:
    """A failed attempt's HTTP status and rate-limit snapshot (None where it carries none)."""
    return http_status(error), limits_snapshot(getattr(error, "rate_limits", None))
