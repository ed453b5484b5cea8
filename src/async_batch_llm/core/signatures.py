"""How to call a strategy whose ``execute``/``on_error`` predate the ``state`` parameter.

Strategies written for older versions of the API (and the reference library's own OpenAI
and Anthropic examples) define ``execute(self, prompt, attempt, timeout)`` and
``on_error(self, exception, attempt)``. Each class is inspected once, the first time the
engine meets it; every call after that is a dictionary lookup.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

#: How a method takes the per-item ``state``: not at all, as its next positional
#: argument, or only as the keyword ``state=``.
NO_STATE, POSITIONAL, KEYWORD = 0, 1, 2

_shapes: weakref.WeakKeyDictionary[type, tuple[int, int]] = weakref.WeakKeyDictionary()


def state_passing(method: Callable[..., Any] | None, positional_before_state: int) -> int:
    """How ``method`` (bound) takes ``state`` after ``positional_before_state`` arguments."""
    if method is None:
        return NO_STATE
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return POSITIONAL  # cannot tell (a C callable): call it the documented way
    positional = 0
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return POSITIONAL
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
        elif parameter.kind is parameter.VAR_KEYWORD or parameter.name == "state":
            return KEYWORD
    return POSITIONAL if positional > positional_before_state else NO_STATE


def call_shape(strategy: Any) -> tuple[int, int]:
    """``(execute, on_error)`` state passing of ``strategy``'s class, inspected once per class."""
    cls = type(strategy)
    try:
        return _shapes[cls]
    except KeyError:
        pass
    except TypeError:  # a class that cannot be weakly referenced: inspect every time
        return _inspect(strategy)
    shape = _shapes[cls] = _inspect(strategy)
    return shape


def _inspect(strategy: Any) -> tuple[int, int]:
    return (
        state_passing(getattr(strategy, "execute", None), 3),
        state_passing(getattr(strategy, "on_error", None), 2),
    )
