"""LiteLLMErrorClassifier: real litellm exceptions, built here and raised over loopback HTTP."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import httpx
import pydantic
import pytest

from async_batch_llm import DefaultErrorClassifier, FrameworkTimeoutError
from async_batch_llm.providers._litellm_import import load_litellm
from async_batch_llm.providers.litellm_errors import (
    LiteLLMErrorClassifier,
    StructuredOutputError,
)
from async_batch_llm.simulator import ProviderSimulator

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*")

litellm = load_litellm()
import openai  # noqa: E402  (imported by litellm above; order is deliberate)

URL = "http://127.0.0.1:9/v1/chat/completions"
KW = {"model": "gpt-4o-mini", "llm_provider": "openai"}
classify = LiteLLMErrorClassifier().classify


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    """A real httpx response, as litellm attaches to its status errors."""
    return httpx.Response(status, headers=headers or {}, request=httpx.Request("POST", URL))


def _pydantic_error() -> pydantic.ValidationError:
    class Model(pydantic.BaseModel):
        a: int

    try:
        Model.model_validate_json("{}")
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


# (factory, retryable, rate limit, timeout, category)
CASES: list[tuple[str, Callable[[], Exception], bool, bool, bool, str]] = [
    (
        "context_window",
        lambda: litellm.ContextWindowExceededError(message="too long", **KW),
        False,
        False,
        False,
        "context_window",
    ),
    (
        "content_policy",
        lambda: litellm.ContentPolicyViolationError(message="no", **KW),
        False,
        False,
        False,
        "content_policy",
    ),
    (
        "unsupported_params",
        lambda: litellm.UnsupportedParamsError(message="bad param", **KW),
        False,
        False,
        False,
        "bad_request",
    ),
    (
        "payment_required",
        lambda: litellm.PaymentRequiredError(message="pay", **KW),
        False,
        False,
        False,
        "payment_required",
    ),
    (
        "bad_request",
        lambda: litellm.BadRequestError(message="bad", **KW),
        False,
        False,
        False,
        "bad_request",
    ),
    (
        "authentication",
        lambda: litellm.AuthenticationError(message="who", **KW),
        False,
        False,
        False,
        "auth",
    ),
    (
        "permission_denied",
        lambda: litellm.PermissionDeniedError(message="no", response=response(403), **KW),
        False,
        False,
        False,
        "auth",
    ),
    (
        "not_found",
        lambda: litellm.NotFoundError(message="gone", **KW),
        False,
        False,
        False,
        "not_found",
    ),
    (
        "timeout",
        lambda: litellm.Timeout(message="slow", **KW),
        True,
        False,
        True,
        "timeout",
    ),
    (
        "openai_timeout",
        lambda: openai.APITimeoutError(request=httpx.Request("POST", URL)),
        True,
        False,
        True,
        "timeout",
    ),
    (
        "connection",
        lambda: litellm.APIConnectionError(message="refused", **KW),
        True,
        False,
        False,
        "connection_error",
    ),
    (
        "service_unavailable",
        lambda: litellm.ServiceUnavailableError(message="busy", **KW),
        True,
        False,
        False,
        "overloaded",
    ),
    (
        "bad_gateway",
        lambda: litellm.BadGatewayError(message="proxy", **KW),
        True,
        False,
        False,
        "server_error",
    ),
    (
        "internal",
        lambda: litellm.InternalServerError(message="boom", **KW),
        True,
        False,
        False,
        "server_error",
    ),
    (
        "internal_not_json",
        lambda: litellm.InternalServerError(
            message="OpenAIException - Expecting value: line 1 column 1 (char 0)", **KW
        ),
        True,
        False,
        False,
        "malformed_response",
    ),
    (
        "internal_connection",
        lambda: litellm.InternalServerError(message="OpenAIException - Connection error.", **KW),
        True,
        False,
        False,
        "connection_error",
    ),
    (
        "internal_missing_key",
        lambda: litellm.InternalServerError(
            message="OpenAIException - Missing credentials. Please pass an `api_key`", **KW
        ),
        False,
        False,
        False,
        "auth",
    ),
    (
        "api_error_403",  # how a 403 really arrives from an openai-compatible server
        lambda: litellm.APIError(status_code=403, message="forbidden", **KW),
        False,
        False,
        False,
        "auth",
    ),
    (
        "api_error_504",
        lambda: litellm.APIError(status_code=504, message="gateway timeout", **KW),
        True,
        False,
        True,
        "timeout",
    ),
    (
        "json_schema_validation",
        lambda: litellm.JSONSchemaValidationError(
            model="gpt-4o-mini", llm_provider="openai", raw_response="{}", schema="{}"
        ),
        True,
        False,
        False,
        "validation_error",
    ),
    (
        "budget",
        lambda: litellm.BudgetExceededError(current_cost=2.0, max_budget=1.0),
        False,
        False,
        False,
        "budget_exceeded",
    ),
    ("pydantic_validation", _pydantic_error, True, False, False, "validation_error"),
    (
        "structured_output",
        lambda: StructuredOutputError("no match", token_usage={"input_tokens": 3}),
        True,
        False,
        False,
        "validation_error",
    ),
]


@pytest.mark.parametrize(
    ("factory", "retryable", "rate_limit", "timeout", "category"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_classifies_by_type(
    factory: Callable[[], Exception],
    retryable: bool,
    rate_limit: bool,
    timeout: bool,
    category: str,
) -> None:
    info = classify(factory())
    assert (info.is_retryable, info.is_rate_limit, info.is_timeout, info.error_category) == (
        retryable,
        rate_limit,
        timeout,
        category,
    )


def test_the_engine_timeout_is_classified_as_the_default_classifier_does() -> None:
    exc = FrameworkTimeoutError("attempt ran past timeout_per_item=1s")
    info = classify(exc)
    assert info.is_retryable and info.is_timeout and not info.is_rate_limit
    assert info == DefaultErrorClassifier().classify(exc)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),  # the -ms form wins
        ({"Retry-After": "3"}, 3.0),
        ({}, None),
    ],
)
def test_rate_limit_wait_from_response_headers(headers: dict[str, str], wait: float | None) -> None:
    exc = litellm.RateLimitError(message="slow down", response=response(429, headers), **KW)
    info = classify(exc)
    assert (info.is_retryable, info.is_rate_limit, info.error_category) == (
        True,
        True,
        "rate_limit",
    )
    assert (
        info.suggested_wait == pytest.approx(wait)
        if wait is not None
        else info.suggested_wait is None
    )


def test_rate_limit_wait_from_litellm_response_headers() -> None:
    exc = litellm.RateLimitError(message="slow down", **KW)
    exc.litellm_response_headers = httpx.Headers({"retry-after": "2"})
    assert classify(exc).suggested_wait == pytest.approx(2.0)


def test_insufficient_quota_is_not_transient() -> None:
    body = {"message": "You exceeded your current quota", "code": "insufficient_quota"}
    exc = litellm.RateLimitError(message="quota", response=response(429), body=body, **KW)
    assert exc.code == "429"  # litellm overwrites .code: the body is where the truth is
    info = classify(exc)
    assert (info.is_retryable, info.is_rate_limit, info.error_category) == (
        False,
        False,
        "insufficient_quota",
    )


def test_non_sdk_errors_fall_back_to_default() -> None:
    default = DefaultErrorClassifier().classify
    for exc in (ValueError("odd"), ConnectionResetError(), KeyError("k")):
        assert classify(exc) == default(exc)
    assert classify(ConnectionResetError()).error_category == "connection_error"


def test_without_litellm_imported_uses_default(monkeypatch: pytest.MonkeyPatch) -> None:
    class Status429(Exception):
        status_code = 429

    monkeypatch.delitem(sys.modules, "litellm")
    monkeypatch.delitem(sys.modules, "openai")
    info = LiteLLMErrorClassifier().classify(Status429("too many requests"))
    assert (info.is_rate_limit, info.error_category) == (True, "rate_limit")


# --- the same, raised for real: litellm over loopback HTTP to the simulator ----------------

THROUGH_HTTP = [
    ("[[sim:429:retry_after=0.25]]", True, True, "rate_limit", 0.25),
    ("[[sim:quota]]", False, False, "insufficient_quota", None),
    ("[[sim:503]]", True, False, "overloaded", None),
    ("[[sim:502]]", True, False, "server_error", None),
    ("[[sim:500]]", True, False, "server_error", None),
    ("[[sim:400]]", False, False, "bad_request", None),
    ("[[sim:401]]", False, False, "auth", None),
    ("[[sim:403]]", False, False, "auth", None),
    ("[[sim:404]]", False, False, "not_found", None),
    ("[[sim:context_window]]", False, False, "context_window", None),
    ("[[sim:malformed]]", True, False, "malformed_response", None),
    ("[[sim:reset]]", True, False, "connection_error", None),
    ("[[sim:slow=3]]", True, False, "timeout", None),
]


@pytest.fixture(scope="module")
def sim() -> Any:
    with ProviderSimulator("fast", seed=7) as running:
        yield running


@pytest.mark.parametrize(("directive", "retryable", "rate_limit", "category", "wait"), THROUGH_HTTP)
async def test_classifies_errors_raised_over_http(
    sim: ProviderSimulator,
    directive: str,
    retryable: bool,
    rate_limit: bool,
    category: str,
    wait: float | None,
) -> None:
    with pytest.raises(Exception) as caught:  # whichever litellm type: that is what we classify
        await litellm.acompletion(
            model="openai/sim-errors",
            api_base=sim.base_url,
            api_key="test-key-123",
            messages=[{"role": "user", "content": directive}],
            timeout=0.3,
            max_retries=0,
        )
    info = classify(caught.value)
    assert (info.is_retryable, info.is_rate_limit, info.error_category) == (
        retryable,
        rate_limit,
        category,
    ), f"{type(caught.value).__name__}: {caught.value}"
    if wait is not None:
        assert info.suggested_wait == pytest.approx(wait)
