"""Redaction: secrets are found by key name, then replaced by value in text, nested data and log output."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from nemo_gym.redaction import (
    REDACTED,
    RedactingFilter,
    Redactor,
    collect_secrets,
    install_log_redaction,
    is_secret_key,
)

OPENROUTER_KEY = "sk-or-v1-abcdef123456"


# --------------------------------------------------------------------------- which keys hold secrets


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "policy_api_key",
        "API_KEY",
        "OPENROUTER_API_KEY",
        "apiKey",
        "x-api-key",
        "token",
        "access_token",
        "hf_token",
        "secret",
        "client_secret",
        "password",
        "db_password",
        "Authorization",
        "credentials",
    ],
)
def test_secret_looking_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "max_output_tokens",
        "total_tokens",
        "max_tokens",
        "input_tokens",
        "reasoning_tokens",
        "tokenizer",
        "base_url",
        "model",
        "policy_model_name",
        "keyboard",
        "monkey",
        "author",
    ],
)
def test_ordinary_keys_are_not_secrets(key: str) -> None:
    assert not is_secret_key(key)


# --------------------------------------------------------------------------- collecting secret values


def test_collect_secrets_finds_values_under_secret_keys_at_any_depth() -> None:
    config = {
        "policy_api_key": OPENROUTER_KEY,
        "policy_model": {"responses_api_models": {"openai_model": {"api_key": "nested-key-value"}}},
        "servers": [{"token": "token-in-a-list"}, {"name": "not-a-secret"}],
        "db": {"password": "hunter2hunter2", "secret": "deep-secret"},
    }

    assert collect_secrets(config) == {
        OPENROUTER_KEY,
        "nested-key-value",
        "token-in-a-list",
        "hunter2hunter2",
        "deep-secret",
    }


def test_collect_secrets_ignores_token_counts_and_ordinary_values() -> None:
    config = {
        "max_output_tokens": "4096",
        "usage": {"total_tokens": "1234", "input_tokens": 10},
        "policy_model_name": "meta-llama/llama-3.1-8b-instruct:free",
        "base_url": "https://openrouter.ai/api/v1",
    }

    assert collect_secrets(config) == set()


def test_empty_or_missing_secret_values_are_not_collected() -> None:
    # An empty "secret" would otherwise match everywhere and redact every string.
    assert collect_secrets({"api_key": "", "token": None, "secret": "ab"}) == set()


# --------------------------------------------------------------------------- replacing them


def test_redactor_replaces_every_occurrence_of_a_known_secret_in_text() -> None:
    redactor = Redactor({"my-configured-secret"})

    text = redactor.text("a my-configured-secret b my-configured-secret c")

    assert text == f"a {REDACTED} b {REDACTED} c"


def test_redactor_replaces_a_secret_embedded_in_other_text() -> None:
    redactor = Redactor({"plainvalue99"})

    assert "plainvalue99" not in redactor.text('{"error": "invalid key plainvalue99 for user"}')


def test_longer_secrets_are_replaced_first_so_no_fragment_remains() -> None:
    redactor = Redactor({"prefix", "prefix-and-more"})

    assert redactor.text("x prefix-and-more y") == f"x {REDACTED} y"


def test_redactor_data_redacts_nested_structures_without_touching_other_values() -> None:
    redactor = Redactor(collect_secrets({"policy_api_key": OPENROUTER_KEY}))
    record = {
        "request": {"headers": [f"Authorization: Bearer {OPENROUTER_KEY}"], "api_key": OPENROUTER_KEY},
        "echo": (f"key={OPENROUTER_KEY}", 3),
        "usage": {"total_tokens": 42, "cost": 0.5, "cached": None, "ok": True},
    }

    redacted = redactor.data(record)

    assert OPENROUTER_KEY not in repr(redacted)
    assert redacted["request"]["api_key"] == REDACTED
    assert redacted["echo"] == [f"key={REDACTED}", 3]
    assert redacted["usage"] == {"total_tokens": 42, "cost": 0.5, "cached": None, "ok": True}
    assert record["request"]["api_key"] == OPENROUTER_KEY  # the input is not mutated


def test_added_secrets_are_redacted_too() -> None:
    redactor = Redactor()
    redactor.add("late-arriving-secret")

    assert redactor.text("late-arriving-secret") == REDACTED


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdefghijkl0123",
        "authorization: bearer ya29.some-oauth_token~value",
        'headers={"Authorization": "Bearer unknown-opaque-token"}',
    ],
)
def test_bearer_headers_are_redacted_even_when_the_secret_was_never_configured(text: str) -> None:
    redacted = Redactor().text(text)

    assert REDACTED in redacted
    assert redacted.lower().count("bearer") == text.lower().count("bearer")  # the scheme stays readable
    assert text.split()[-1].rstrip('"}') not in redacted


@pytest.mark.parametrize(
    "key",
    ["sk-or-v1-0123456789abcdef0123", "sk-proj-AbCdEf0123456789", "sk-0123456789abcdefXYZ"],
)
def test_sk_style_keys_are_redacted_as_a_safety_net(key: str) -> None:
    assert Redactor().text(f"upstream said: invalid key {key}.") == f"upstream said: invalid key {REDACTED}."


@pytest.mark.parametrize(
    "text",
    [
        "task-management-system is fine",
        "risk-adjusted returns",
        "sk-short",
        "max_output_tokens=4096 total_tokens=1234",
        "model meta-llama/llama-3.1-8b-instruct:free at https://openrouter.ai/api/v1",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor({OPENROUTER_KEY}).text(text) == text


# --------------------------------------------------------------------------- logging


@pytest.fixture
def captured_logger() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.redaction.captured")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)
    logger.propagate = True


def test_logging_filter_redacts_the_formatted_message(
    captured_logger: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured_logger
    handler.addFilter(RedactingFilter(Redactor({OPENROUTER_KEY})))

    logger.info("calling upstream with key %s and %r", OPENROUTER_KEY, {"api_key": OPENROUTER_KEY})
    logger.warning("request headers: Authorization: Bearer opaque-token-123456")

    output = stream.getvalue()
    assert OPENROUTER_KEY not in output
    assert "opaque-token-123456" not in output
    assert f"INFO calling upstream with key {REDACTED} and {{'api_key': '{REDACTED}'}}" in output
    assert "WARNING request headers" in output


def test_logging_filter_redacts_exception_text(
    captured_logger: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured_logger
    handler.addFilter(RedactingFilter(Redactor({OPENROUTER_KEY})))

    try:
        raise RuntimeError(f"upstream rejected {OPENROUTER_KEY}")
    except RuntimeError:
        logger.exception("call failed")

    output = stream.getvalue()
    assert "call failed" in output
    assert "Traceback" in output
    assert f"RuntimeError: upstream rejected {REDACTED}" in output
    assert OPENROUTER_KEY not in output


def test_logging_filter_never_drops_records(
    captured_logger: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured_logger
    handler.addFilter(RedactingFilter(Redactor({OPENROUTER_KEY})))

    logger.info("nothing secret here: %d tokens", 12)

    assert stream.getvalue() == "INFO nothing secret here: 12 tokens\n"


@pytest.fixture
def root_handler() -> Iterator[io.StringIO]:
    """A handler on the root logger, with every filter install_log_redaction adds removed afterwards."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx")
    before = {name: list(logging.getLogger(name).filters) for name in names}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    # uvicorn's own logging config (applied by any server started earlier in the session) stops propagation.
    propagation = {name: logging.getLogger(name).propagate for name in names}
    for name in names:
        logging.getLogger(name).propagate = True
    yield stream
    for name, value in propagation.items():
        logging.getLogger(name).propagate = value
    root.removeHandler(handler)
    root.setLevel(old_level)
    for name, filters in before.items():
        logger = logging.getLogger(name)
        for added in [f for f in logger.filters if f not in filters]:
            logger.removeFilter(added)
        for each in logger.handlers:
            for added in [f for f in each.filters if isinstance(f, RedactingFilter)]:
                each.removeFilter(added)


def test_install_log_redaction_covers_records_propagated_to_root_handlers(root_handler: io.StringIO) -> None:
    install_log_redaction(Redactor({OPENROUTER_KEY}))

    logging.getLogger("tests.redaction.some.module").info("key is %s", OPENROUTER_KEY)
    logging.getLogger("uvicorn.error").error("key is %s", OPENROUTER_KEY)

    output = root_handler.getvalue()
    assert OPENROUTER_KEY not in output
    assert output.count(f"key is {REDACTED}") == 2
