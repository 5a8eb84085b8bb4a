"""The emulator's scripted replies over real loopback HTTP: a request containing all of a rule's substrings gets the
rule's reply verbatim (an LLM judge's verdict) on /chat/completions and /responses, priced and metered; other
requests get the scripted policy; `models` restricts a rule; a bad rules file stops the emulator at start-up."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import project_root
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.serving import serve_in_thread

KEY = "sk-or-v1-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
MINI = "openai/gpt-4o-mini"
TURBO = "openai/gpt-4-turbo"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
JUDGE_SYSTEM = "You are a strict judge. Compare the expected answer with the generated answer."
EQUAL = "[[A=B]] The two answers are equivalent."
DIFFERENT = "[[A!=B]] The answers differ."

Serve = Callable[..., tuple[OpenRouterEmulator, str]]


def write_rules(path: Path, *rules: dict[str, Any] | str) -> Path:
    """A JSONL rules file; a str rule is written as it is (to write broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rules), encoding="utf-8")
    return path


@pytest.fixture
def judge_rules(tmp_path: Path) -> Path:
    return write_rules(
        tmp_path / "judge_replies.jsonl",
        {"when_all": ["strict judge", "Expected: 42", "Generated: 42"], "reply": EQUAL},
        {"when_all": ["strict judge", "Expected: 42"], "reply": DIFFERENT},
        {"when_all": ["Weather in Paris"], "reply": "Paris is sunny, says GPT-4 Turbo.", "models": [TURBO]},
    )


@pytest.fixture
def serve() -> Iterator[Serve]:
    """serve(**config) -> (emulator, base URL ending in /api/v1); every server stops when the test ends."""
    stack: list[Any] = []

    def start(**config: Any) -> tuple[OpenRouterEmulator, str]:
        emulator = OpenRouterEmulator(EmulatorConfig(**{"keys": [KEY], **config}))
        context = serve_in_thread(emulator.app())
        url = context.__enter__()
        stack.append(context)
        return emulator, url + "/api/v1"

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def judge_messages(expected: str, generated: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": [{"type": "text", "text": f"Expected: {expected}\nGenerated: {generated}"}]},
    ]


def chat(url: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(url + "/chat/completions", json=body, headers=AUTH, timeout=10, trust_env=False)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def expected_cost(usage: dict[str, Any], prompt_price: str, completion_price: str) -> float:
    return float(
        usage["prompt_tokens"] * Decimal(prompt_price) + usage["completion_tokens"] * Decimal(completion_price)
    )


def test_a_matching_rule_answers_its_reply_on_chat_completions_priced_and_metered(
    serve: Serve, judge_rules: Path
) -> None:
    emulator, url = serve(scripted_replies=[judge_rules])

    # tools offered and a proper noun in the request: the rule still wins over the tool-calling logic
    body = {"model": MINI, "messages": judge_messages("42", "42 (Paris)"), "tools": [WEATHER_TOOL]}
    completion = chat(url, body)

    choice = completion["choices"][0]
    assert choice["message"]["content"] == EQUAL
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    usage = completion["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["cost"] == pytest.approx(expected_cost(usage, "0.00000015", "0.0000006"))
    assert usage["cost"] > 0
    assert emulator.served == {MINI: 1} and emulator.spent_usd == pytest.approx(usage["cost"])
    assert emulator.generations[completion["id"]]["finish_reason"] == "stop"


def test_the_first_matching_rule_wins(serve: Serve, judge_rules: Path) -> None:
    _, url = serve(scripted_replies=[judge_rules])

    equal = chat(url, {"model": MINI, "messages": judge_messages("42", "42")})
    different = chat(url, {"model": MINI, "messages": judge_messages("42", "41")})

    assert equal["choices"][0]["message"]["content"] == EQUAL
    assert different["choices"][0]["message"]["content"] == DIFFERENT


def test_substrings_may_come_from_any_message_of_the_conversation(serve: Serve, tmp_path: Path) -> None:
    rules = write_rules(
        tmp_path / "rules.jsonl", {"when_all": ["system-marker", "assistant-marker", "tool-marker"], "reply": "all"}
    )
    _, url = serve(scripted_replies=[rules])
    messages = [
        {"role": "system", "content": "system-marker"},
        {"role": "user", "content": "What about Berlin?"},
        {
            "role": "assistant",
            "content": "assistant-marker",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "tool-marker"},
    ]

    completion = chat(url, {"model": MINI, "messages": messages, "tools": [WEATHER_TOOL]})

    assert completion["choices"][0]["message"]["content"] == "all"
    without_tool_text = chat(url, {"model": MINI, "messages": messages[:2], "tools": [WEATHER_TOOL]})
    assert without_tool_text["choices"][0]["finish_reason"] == "tool_calls"  # not all substrings: scripted policy


def test_a_matching_rule_answers_its_reply_on_responses(serve: Serve, judge_rules: Path) -> None:
    emulator, url = serve(scripted_replies=[judge_rules])
    body = {
        "model": MINI,
        "instructions": JUDGE_SYSTEM,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Expected: 42\nGenerated: 42"}]}],
        "store": False,
    }

    answer = httpx.post(url + "/responses", json=body, headers=AUTH, timeout=10, trust_env=False)

    assert answer.status_code == 200, answer.text
    response = answer.json()
    messages = [item for item in response["output"] if item["type"] == "message"]
    assert [part["text"] for m in messages for part in m["content"]] == [EQUAL]
    assert not [item for item in response["output"] if item["type"] == "function_call"]
    assert response["status"] == "completed"
    assert response["usage"]["output_tokens"] > 0 and response["usage"]["cost"] > 0
    assert emulator.served == {MINI: 1} and emulator.spent_usd == pytest.approx(response["usage"]["cost"])


def test_a_streamed_request_streams_the_reply(serve: Serve, judge_rules: Path) -> None:
    _, url = serve(scripted_replies=[judge_rules])
    body = {"model": MINI, "messages": judge_messages("42", "42"), "stream": True}

    raw = httpx.post(url + "/chat/completions", json=body, headers=AUTH, timeout=10, trust_env=False).text

    chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == EQUAL
    assert any(c.get("usage", {}).get("cost", 0) > 0 for c in chunks)


def test_requests_no_rule_matches_get_the_scripted_policy(serve: Serve, judge_rules: Path) -> None:
    _, url = serve(scripted_replies=[judge_rules])
    body = {
        "model": MINI,
        "messages": [{"role": "user", "content": "Weather in Lima and Oslo?"}],
        "tools": [WEATHER_TOOL],
    }

    completion = chat(url, body)

    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [json.loads(c["function"]["arguments"]) for c in choice["message"]["tool_calls"]] == [
        {"city": "Lima"},
        {"city": "Oslo"},
    ]
    text_only = chat(url, {"model": MINI, "messages": [{"role": "user", "content": "hello there"}]})
    assert (
        text_only["choices"][0]["message"]["content"] == 'I read "hello there" but found nothing specific to look up.'
    )


def test_models_restricts_a_rule_to_those_models(serve: Serve, judge_rules: Path) -> None:
    emulator, url = serve(scripted_replies=[judge_rules])
    body = {"messages": [{"role": "user", "content": "Weather in Paris today?"}], "tools": [WEATHER_TOOL]}

    turbo = chat(url, {"model": TURBO, **body})
    mini = chat(url, {"model": MINI, **body})

    assert turbo["choices"][0]["message"]["content"] == "Paris is sunny, says GPT-4 Turbo."
    assert turbo["usage"]["cost"] == pytest.approx(expected_cost(turbo["usage"], "0.00001", "0.00003"))
    assert mini["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["function"]["arguments"] for c in mini["choices"][0]["message"]["tool_calls"]] == ['{"city": "Paris"}']
    assert emulator.served == {TURBO: 1, MINI: 1}


def test_rules_of_several_files_are_tried_in_the_order_given(serve: Serve, tmp_path: Path) -> None:
    first = write_rules(tmp_path / "first.jsonl", {"when_all": ["ping"], "reply": "from first"})
    second = write_rules(tmp_path / "second.jsonl", {"when_all": ["ping"], "reply": "from second"})
    _, url = serve(scripted_replies=[second, first])

    completion = chat(url, {"model": MINI, "messages": [{"role": "user", "content": "ping"}]})

    assert completion["choices"][0]["message"]["content"] == "from second"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('["when_all"]', "a JSON list, not an object"),
        ('{"reply": "x"}', 'missing "when_all"'),
        ('{"when_all": "x", "reply": "x"}', '"when_all" must be a non-empty list of non-empty strings'),
        ('{"when_all": [], "reply": "x"}', '"when_all" must be a non-empty list of non-empty strings'),
        ('{"when_all": ["a", ""], "reply": "x"}', '"when_all" must be a non-empty list of non-empty strings'),
        ('{"when_all": ["a"]}', 'missing "reply"'),
        ('{"when_all": ["a"], "reply": 3}', '"reply" must be a string'),
        ('{"when_all": ["a"], "reply": "x", "model": ["openai/gpt-4o-mini"]}', "unknown key(s) 'model'"),
        ('{"when_all": ["a"], "reply": "x", "models": ["openai/gpt4o-mini"]}', "not in the emulator's catalog"),
    ],
)
def test_a_bad_rule_fails_at_start_up_naming_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    rules = write_rules(tmp_path / "rules.jsonl", {"when_all": ["fine"], "reply": "ok"}, "", line)

    with pytest.raises(ConfigError) as info:
        OpenRouterEmulator(EmulatorConfig(scripted_replies=[rules]))

    message = str(info.value)
    assert message.startswith(f"{rules}:3: ")
    assert problem in message
    assert '{"when_all": ["substring", ...], "reply": "text"}' in message  # says how to fix it


def test_a_missing_rules_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scripted_replies: file not found: .*nope.jsonl"):
        OpenRouterEmulator(EmulatorConfig(scripted_replies=[tmp_path / "nope.jsonl"]))


def emulator_command(*overrides: str, cwd: Path) -> CommandProcess:
    """`python -m nemo_gym.cli.openrouter_emulator <overrides>` running this checkout's code."""
    paths = [str(project_root()), os.environ.get("PYTHONPATH", "")]
    environ = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return CommandProcess([sys.executable, "-m", "nemo_gym.cli.openrouter_emulator", *overrides], cwd=cwd, env=environ)


def test_the_command_takes_scripted_replies_from_the_command_line(tmp_path: Path, judge_rules: Path) -> None:
    extra = write_rules(tmp_path / "extra.jsonl", {"when_all": ["ping"], "reply": "pong"})
    process = emulator_command(f"+keys=[{KEY}]", f"+scripted_replies=[{judge_rules.name}, {extra.name}]", cwd=tmp_path)
    try:
        assert process.wait_for("ng_openrouter_emulator ready at http://127.0.0.1:", timeout_s=30), process.output
        url = next(li for li in process.lines if "ready at" in li).split("ready at ")[1].strip()
        verdict = chat(url, {"model": MINI, "messages": judge_messages("42", "42")})
        pong = chat(url, {"model": MINI, "messages": [{"role": "user", "content": "ping"}]})
        assert verdict["choices"][0]["message"]["content"] == EQUAL
        assert pong["choices"][0]["message"]["content"] == "pong"
        process.send(signal.SIGINT)
        assert process.wait(timeout_s=15) == 0, process.output
    finally:
        process.close()


def test_the_command_exits_with_the_problem_of_a_bad_rules_file(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules.jsonl", '{"when_all": ["a"], "reply": null}')
    process = emulator_command(f"+scripted_replies=[{rules.name}]", cwd=tmp_path)
    try:
        assert process.wait(timeout_s=30) == 2
        assert f'error: {rules}:1: "reply" must be a string, got None' in process.output
        assert "ready" not in process.output and "Traceback" not in process.output
    finally:
        process.close()
