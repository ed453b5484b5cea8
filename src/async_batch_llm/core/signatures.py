"""How to call user hooks written to another shape of the API than ours.

Strategies written for older versions of the API (and the reference library's own OpenAI
and Anthropic examples) define ``execute(self, prompt, attempt, timeout)`` and
``on_error(self, exception, attempt)``; middleware written from the reference's API
document defines ``after_process(self, work_item, result)`` where its code (and ours) calls
``after_process(result)``. Each class is inspected once, the first time the engine meets
it; every call after that is a dictionary lookup.
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


_after_shapes: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def after_process_takes_item(middleware: Any) -> bool:
    """Whether ``middleware.after_process`` is ``(work_item, result)``, as the reference's
    API document writes it, rather than ``(result)``: inspected once per class."""
    cls = type(middleware)
    try:
        return _after_shapes[cls]
    except KeyError:
        pass
    except TypeError:
        return _positional_count(middleware.after_process) >= 2
    takes = _after_shapes[cls] = _positional_count(middleware.after_process) >= 2
    return takes


def _positional_count(method: Callable[..., Any]) -> int:
    """Positional parameters of a bound method (-1 when it cannot be told)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return -1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for parameter in parameters if parameter.kind in kinds)
