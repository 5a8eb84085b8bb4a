"""Redaction: secrets are found by key name, then replaced by value in text, nested data and log output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from nemo_gym.config.secrets import (
    REDACTED,
    RedactingFilter,
    Redactor,
    collect_secrets,
    command_line_secrets,
    command_redactor,
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
        "api_keys",
        "openrouter_api_keys",
        "keys",
        "secrets",
        "passwords",
        "openrouterApiKey",
        "hfToken",
        "dbPassword",
        "clientSecrets",
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
        "tokens",
        "maxOutputTokens",
        "hf_tokens",
        "monkeys",
        "authority",
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
    assert collect_secrets({"api_key": "", "token": None, "secret": "ab", "password": True}) == set()


def test_numeric_secrets_are_collected_as_the_text_they_show_up_as() -> None:
    # YAML reads `password: 12345678` as an int; it still shows up as "12345678" in a log line.
    assert collect_secrets({"db_password": 12345678, "pin_secret": 1234.5}) == {"12345678", "1234.5"}


def test_every_value_in_a_list_under_a_plural_secret_key_is_collected() -> None:
    config = {
        "openrouter": {"api_keys": ["sk-or-v1-first-key", "second-key-value", 87654321]},
        "tokens": ["not-secret", "also-not"],
    }

    assert collect_secrets(config) == {"sk-or-v1-first-key", "second-key-value", "87654321"}


def test_a_password_inside_a_configured_url_is_collected_whatever_its_key() -> None:
    config = {"base_url": "https://proxy-user:proxy-pass-123@proxy.example.org/api/v1", "plain": "https://a.org/x"}

    assert collect_secrets(config) == {"proxy-pass-123"}
    # ...so it is redacted where the URL is shown without its scheme, e.g. as a host label.
    assert "proxy-pass-123" not in Redactor(collect_secrets(config)).text("model at proxy-user:proxy-pass-123@proxy")


def test_everything_nested_under_a_secret_key_is_secret() -> None:
    config = {"credentials": {"service_account": {"private_value": "pem-body-xyz"}, "ids": [["nested-id-1"]]}}

    assert collect_secrets(config) == {"pem-body-xyz", "nested-id-1"}


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


def test_a_numeric_secret_is_redacted_in_text_and_as_a_number_in_data() -> None:
    redactor = Redactor(collect_secrets({"password": 12345678}))

    assert redactor.text("login with 12345678 failed") == f"login with {REDACTED} failed"
    assert redactor.data({"hint": 12345678, "total_tokens": 1234, "ok": True}) == {
        "hint": REDACTED,
        "total_tokens": 1234,
        "ok": True,
    }


def test_config_redaction_replaces_whole_values_under_secret_keys_and_keeps_the_rest() -> None:
    config = {
        "db_password": 99,  # too short to match by value, still never shown
        "service": {"api_keys": ["key-one-1234", "key-two-5678"], "url": "https://example.org"},
        "fallbacks": [{"api_key": "fallback-key-000", "model": "openai/gpt-4o-mini", "api_key_required": False}],
        "notes": {"max_output_tokens": 4096, "total_tokens": 1234, "mentions": "uses key-one-1234"},
        "token": None,
    }

    shown = Redactor(collect_secrets(config)).config(config)

    assert shown == {
        "db_password": REDACTED,
        "service": {"api_keys": [REDACTED, REDACTED], "url": "https://example.org"},
        "fallbacks": [{"api_key": REDACTED, "model": "openai/gpt-4o-mini", "api_key_required": False}],
        "notes": {"max_output_tokens": 4096, "total_tokens": 1234, "mentions": f"uses {REDACTED}"},
        "token": None,
    }


def test_records_keep_values_under_key_shaped_names_that_are_data_not_config() -> None:
    # Chat Completions logprobs carry {"token": ...}: records are redacted by value only.
    record = {"logprobs": [{"token": "Hello", "logprob": -0.1}]}

    assert Redactor({"my-secret-value"}).data(record) == record


def test_a_truncated_secret_is_redacted_where_the_text_cut_it_off() -> None:
    secret = "plain-secret-0123456789abcdef"
    redactor = Redactor({secret})

    assert redactor.text(f"(provider said: key={secret[:15]})") == f"(provider said: key={REDACTED})"
    assert redactor.text(f"body: '{secret[:9]}") == f"body: '{REDACTED}"
    assert redactor.text(f"ends with {secret[:12]}") == f"ends with {REDACTED}"


def test_a_shared_prefix_that_goes_on_is_not_a_fragment() -> None:
    redactor = Redactor({"https://internal.example.org/secret-path"})

    assert redactor.text("see https://internal.example.com/docs") == "see https://internal.example.com/docs"
    assert redactor.text("prefix plain-sec") == "prefix plain-sec"  # shorter than 8 characters of any secret


@pytest.mark.parametrize(
    "key",
    ["sk-or-v1-0123456789abcdef0123", "sk-proj-AbCdEf0123456789", "sk-0123456789abcdefXYZ"],
)
def test_sk_style_keys_are_redacted_as_a_safety_net(key: str) -> None:
    assert Redactor().text(f"upstream said: invalid key {key}.") == f"upstream said: invalid key {REDACTED}."


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
        ("{'authorization': 'Token abcdef0123456'}", "abcdef0123456"),
        ("connecting to postgres://admin:hunter2pw@db.internal:5432/x", "hunter2pw"),
    ],
)
def test_other_credentials_in_text_are_redacted_as_a_safety_net(text: str, hidden: str) -> None:
    redacted = Redactor().text(text)

    assert hidden not in redacted and REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        "Authorization failed for this request",
        "task-management-system is fine",
        "risk-adjusted returns",
        "sk-short",
        "max_output_tokens=4096 total_tokens=1234",
        "model meta-llama/llama-3.1-8b-instruct:free at https://openrouter.ai/api/v1",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor({OPENROUTER_KEY}).text(text) == text


# --------------------------------------------------------------------------- command lines


def test_secret_values_on_a_command_line_are_known_even_when_the_override_does_not_parse() -> None:
    args = [
        "+config_paths=[a.yaml]",
        "+wandb_api_key=[unterminated-secret",
        "+policy.token='quoted-token-1'",
        "+limit=10",
        "~api_key",
    ]

    assert command_line_secrets(args) == {"[unterminated-secret", "'quoted-token-1'", "quoted-token-1"}


def test_a_command_redactor_knows_the_command_line_and_the_loaded_config() -> None:
    redactor = command_redactor(["+hf_token=from-the-command-line"], {"db": {"password": "from-the-config"}})

    assert redactor.text("from-the-command-line and from-the-config") == f"{REDACTED} and {REDACTED}"
    assert command_redactor([]).text("nothing to hide") == "nothing to hide"


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


# --------------------------------------------------------------------------- one JSON line per record


@pytest.mark.parametrize(
    "value",
    [
        {"output": [{"text": f"the key is {OPENROUTER_KEY}"}]},  # a secret inside nested text
        {"note": 'pass"word-with-quote-1234 leaked'},  # a secret that JSON writes escaped
        {"pin": 987654321, "nested": [{"pin": 987654321}]},  # a numeric secret
        {"error": "HTTP 401: key sk-or-v1-abcdef12 was cut off here"},  # a truncated secret
        {"headers": {"authorization": "Bearer some-other-token-value"}},  # the safety nets
        {"text": "fetched https://user:hunter2-password@example.com/x"},
    ],
)
def test_a_json_line_is_redacted_exactly_as_the_value_by_value_walk(value: dict[str, object]) -> None:
    redactor = Redactor([OPENROUTER_KEY, 'pass"word-with-quote-1234', "987654321"])
    line = redactor.json_line(value)
    assert json.loads(line) == redactor.data(value)
    assert OPENROUTER_KEY[:12] not in line and "987654321" not in line and "hunter2" not in line
    assert 'pass\\"word' not in line


def test_a_record_with_nothing_secret_is_serialized_once_and_unchanged() -> None:
    redactor = Redactor([OPENROUTER_KEY])
    record = {
        "reward": 1.0,
        "output": [{"type": "message", "content": "It is sunny in Paris, 21 °C."}],
        "usage": {"input_tokens": 120, "max_output_tokens": 256},
    }
    line = redactor.json_line(record)
    assert line == json.dumps(record, ensure_ascii=False, separators=(",", ":"))
