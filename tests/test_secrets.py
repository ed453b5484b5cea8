"""Redaction: every credential this process can send is removed from text before it is kept."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from async_batch_llm import secrets
from async_batch_llm.secrets import (
    MASK,
    RedactingFilter,
    is_secret_name,
    redact,
    redact_known,
    redact_mapping,
    redact_url,
    refresh_environment,
    register_secret,
    unregister_secret,
)

OPENAI_KEY = "sk-proj-Zq81XbW0aLk3Jv9TmPq2Rs7UvWx4Yz6AbCdEfGh"
ANTHROPIC_KEY = "sk-ant-api03-Vb7Nq2Lk9Xw4Pz8Rt6Ym3Jh5Gf1Dc0Sa"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment changes the redactor sees at once (and forgets after the test)."""
    yield monkeypatch
    monkeypatch.undo()
    refresh_environment()


def setenv(env: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        env.setenv(name, value)
    refresh_environment()


# --- keys from the environment -------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "AZURE_OPENAI_KEY",
        "AZURE_API_KEY",
        "AZURE_AD_TOKEN",
        "AZURE_CLIENT_SECRET",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "HF_TOKEN",
        "WATSONX_APIKEY",
        "MY_SERVICE_PASSWORD",
        "VERTEX_CREDENTIALS",
        "custom_api_key",
    ],
)
def test_a_key_in_the_environment_is_redacted_from_any_text(
    env: pytest.MonkeyPatch, name: str
) -> None:
    value = "Qz7-plainvalue-" + name.lower()  # no known shape: only the environment tells
    setenv(env, **{name: value})
    echoed = f"401 Unauthorized: the key {value} is not valid (header was 'Bearer {value}')"
    redacted = redact(echoed)
    assert value not in redacted
    assert redacted.startswith("401 Unauthorized: the key *** is not valid")


def test_environment_values_that_are_not_keys_stay(env: pytest.MonkeyPatch) -> None:
    setenv(
        env,
        GOOGLE_APPLICATION_CREDENTIALS_FILE="/home/me/creds-and-more.json",
        HF_TOKEN_PATH="/home/me/hf-token-location",
        SOME_TOKEN="short",  # shorter than MIN_SECRET_LENGTH: a dummy
        ABL_PLAIN_SETTING="visible-setting-value",
    )
    text = "/home/me/creds-and-more.json /home/me/hf-token-location short visible-setting-value"
    assert redact(text) == text


def test_passwords_in_url_variables_are_secrets(env: pytest.MonkeyPatch) -> None:
    setenv(env, PROXY_SETTING="http://proxyuser:Pr0xyPassw0rd@proxy.local:3128")
    assert redact("auth failed for Pr0xyPassw0rd") == f"auth failed for {MASK}"


def test_a_variable_added_later_is_seen_without_a_refresh(env: pytest.MonkeyPatch) -> None:
    redact("warm up the environment cache")
    env.setenv("LATE_PROVIDER_API_KEY", "late-key-value-123456")  # adds a variable: size changes
    assert redact("echo late-key-value-123456") == f"echo {MASK}"


# --- registered keys -----------------------------------------------------------------------


def test_registered_key_is_redacted_until_unregistered() -> None:
    key = "plain-registered-credential"
    register_secret(key)
    try:
        assert redact(f"bad key {key}!") == f"bad key {MASK}!"
        assert redact_known(f"{key}{key}") == MASK + MASK
    finally:
        unregister_secret(key)
    assert redact(f"bad key {key}!") == f"bad key {key}!"


def test_a_key_registered_twice_needs_two_unregistrations() -> None:
    key = "shared-strategy-credential"
    register_secret(key)
    register_secret(key)
    unregister_secret(key)
    try:
        assert key not in redact(key)
    finally:
        unregister_secret(key)
    assert redact(key) == key


@pytest.mark.parametrize("dummy", ["sim-key", "any", "", "       x", None])
def test_short_dummy_keys_are_not_registered(dummy: str | None) -> None:
    register_secret(dummy)
    try:
        assert redact("any sim-key will do") == "any sim-key will do"
    finally:
        unregister_secret(dummy)


def test_a_registered_key_is_redacted_in_its_url_encoded_form() -> None:
    key = "p@ss/word+with=chars"
    register_secret(key)
    try:
        assert redact("https://h/x?secretless=p%40ss%2Fword%2Bwith%3Dchars") == (
            f"https://h/x?secretless={MASK}"
        )
    finally:
        unregister_secret(key)


def test_a_longer_key_is_removed_whole_when_it_contains_a_shorter_one() -> None:
    short, long = "abcdefgh-1234", "abcdefgh-1234-and-more-9876"
    register_secret(short)
    register_secret(long)
    try:
        assert redact(f"[{long}] [{short}]") == f"[{MASK}] [{MASK}]"
    finally:
        unregister_secret(short)
        unregister_secret(long)


# --- where credentials sit and what they look like (no prior knowledge) -----------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"Incorrect API key provided: Bearer {OPENAI_KEY}. You can find your API key at",
            "Incorrect API key provided: Bearer ***. You can find your API key at",
        ),
        (f"invalid x-api-key: {ANTHROPIC_KEY}", "invalid x-api-key: ***"),
        (f"key {ANTHROPIC_KEY} revoked", "key *** revoked"),
        (
            "connect to https://user:hunter2pass@api.example.com/v1",
            "connect to https://***@api.example.com/v1",
        ),
        ("clone https://ghtoken123456@github.com/x", "clone https://***@github.com/x"),
        (
            "GET /v1beta/models?alt=json&key=AIzaSyA1234567890abcdefghijklmnopqrstuv failed",
            "GET /v1beta/models?alt=json&key=*** failed",
        ),
        ("AIzaSyA1234567890abcdefghijklmnopqrstuv", MASK),
        # AWS's documented example key id, assembled so no key-shaped text is committed
        ("id " + "AKIA" + "IOSFODNN7EXAMPLE used", "id *** used"),
        (
            "acompletion(api_key='letters-only-key', model='x')",
            "acompletion(api_key='***', model='x')",
        ),
        (
            '{"Authorization": "Bearer abc123def456", "x-api-key": "zz9zzzzzzzzz"}',
            '{"Authorization": "***", "x-api-key": "***"}',
        ),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA== sent", "Authorization: Basic *** sent"),
        ("OPENAI_API_KEY=q1w2e3r4t5y6u7i8 missing", "OPENAI_API_KEY=*** missing"),
        (
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
            "token ***",
        ),
        ("hf_abcdefghijklmnopqrstuvwxyz123456 gsk_abcdefghijklmnopqrstuvwx12", "*** ***"),
    ],
)
def test_credentials_are_found_by_place_and_shape(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "RateLimitError: litellm.RateLimitError: OpenAIException - Rate limit reached for "
        "gpt-4o-mini on tokens per min (TPM): Limit 200000, Used 199000, Requested 1500.",
        "BadRequestError: max_tokens=4096 is too large: the model allows 16384 tokens",
        "the basic configuration failed; bearer authentication required",
        "Missing key: prompt (got keys: id, context)",
        "InternalServerError: Cannot connect to host 127.0.0.1:8000 ssl:default [Connect failed]",
        "Timeout: attempt 2 exceeded timeout_per_item=30.0s for item sku-0001",
        "task-force-alignment-strategy-v2 and email someone@example.com",
        "StructuredOutputError: the reply does not match Answer: 1 validation error(s)",
        "http://127.0.0.1:8000/v1/chat/completions returned 503",
        "",
    ],
)
def test_ordinary_error_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pass@host.example/v1", "https://***@host.example/v1"),
        ("http://only-a-user@10.0.0.2:8000/v1", "http://***@10.0.0.2:8000/v1"),
        (
            "https://host/v1?api-version=2024-02-01&key=abc",
            "https://host/v1?api-version=2024-02-01&key=***",
        ),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("https://a:b@c:d@host/x#frag", "https://***@host/x#frag"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# --- mappings (completion options, settings, headers) -----------------------------------------


def test_redact_mapping_masks_values_under_secret_names_and_keeps_the_rest() -> None:
    options = {
        "api_key": "any",
        "temperature": 0.2,
        "max_tokens": 512,
        "extra_headers": {"Authorization": "Bearer abc", "X-Trace": "t-1"},
        "api_base": "https://u:secretpass@gw.example/v1",
        "metadata": [{"token": "tok-value"}, "free text", 3],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"schema": {"properties": {"password": {"type": "string"}}}},
        },
        "note": f"key was {OPENAI_KEY}",
        "seed": None,
    }
    clean = redact_mapping(options)
    assert clean == {
        "api_key": MASK,
        "temperature": 0.2,
        "max_tokens": 512,
        "extra_headers": {"Authorization": MASK, "X-Trace": "t-1"},
        "api_base": "https://***@gw.example/v1",
        "metadata": [{"token": MASK}, "free text", 3],
        "response_format": options["response_format"],
        "note": "key was ***",
        "seed": None,
    }
    assert options["api_key"] == "any"  # the original is not touched
    assert options["extra_headers"]["Authorization"] == "Bearer abc"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("x-api-key", True),
        ("Authorization", True),
        ("clientSecret", True),
        ("access_token", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("password", True),
        ("key", True),
        ("max_tokens", False),
        ("max_completion_tokens", False),
        ("keywords", False),
        ("temperature", False),
        ("api_base", False),
        ("user", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


# --- logs ------------------------------------------------------------------------------------


def test_redacting_filter_cleans_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_secrets.redacting_filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("call failed with key %s", OPENAI_KEY)
        try:
            raise RuntimeError(f"provider said: Bearer {ANTHROPIC_KEY}")
        except RuntimeError:
            logger.exception("attempt %d failed", 2)
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert OPENAI_KEY not in written and ANTHROPIC_KEY not in written
    assert "call failed with key ***" in written
    assert "attempt 2 failed" in written and "RuntimeError: provider said: Bearer ***" in written


def test_known_secret_list_is_rebuilt_from_registrations_and_environment() -> None:
    """White-box: registering and unregistering leaves no stale value behind."""
    key = "white-box-credential-42"
    register_secret(key)
    assert key in secrets._known_values()
    unregister_secret(key)
    assert key not in secrets._known_values()
