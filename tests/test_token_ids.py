"""Token ids and logprobs for training (`return_token_id_information`): what each upstream gives, where the record
keeps it, what it says when something is missing, and whether a rollout's ids form one stream. Over real loopback
HTTP against the vLLM stub (`nemo_gym/testing/vllm_stub.py`), the OpenRouter emulator and the plain stub upstream;
the bundled llama.cpp model's own tests are in responses_api_models/local_model/tests."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.config.types import GlobalConfig
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.protocol import token_ids
from nemo_gym.protocol.token_ids import TokenInfo
from nemo_gym.servers.base import BaseServer
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks
from nemo_gym.testing.emulated import EMULATOR_KEY, EXAMPLES, collect_rows, emulated_cluster
from nemo_gym.testing.stub_upstream import StubUpstream
from nemo_gym.testing.vllm_stub import IM_END, VLLMStub, pieces, tokenize

FIELDS = {"prompt_token_ids", "generation_token_ids", "generation_log_probs", "generation_tokens"}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
QUESTION = {"role": "user", "content": "What's the weather in Paris?"}


# ------------------------------------------------------------------------------------------------ pure functions


def turn(prompt: list[int], generation: list[int]) -> TokenInfo:
    return {
        "prompt_token_ids": prompt,
        "generation_token_ids": generation,
        "generation_log_probs": [-0.1] * len(generation),
    }


def test_a_rollout_whose_prompts_extend_the_previous_ids_is_contiguous() -> None:
    summary = token_ids.summarize([turn([1, 2], [3, 4]), turn([1, 2, 3, 4, 5, 6], [7])])

    assert summary["contiguous"] is True and summary["first_mismatch"] is None
    assert summary["turns"] == [
        {"turn": 0, "prompt_tokens": 2, "generation_tokens": 2, "generation_log_probs": 2},
        {"turn": 1, "prompt_tokens": 6, "generation_tokens": 1, "generation_log_probs": 1},
    ]


def test_a_retokenised_history_is_flagged_with_the_first_differing_position_and_ids() -> None:
    summary = token_ids.summarize([turn([1, 2], [3, 4]), turn([1, 2, 3, 9, 5], [6]), turn([1, 2, 3, 9, 5, 6], [7])])

    assert summary["contiguous"] is False
    assert summary["first_mismatch"] == {"turn": 1, "position": 3, "expected": 4, "found": 9}


def test_a_prompt_shorter_than_what_came_before_is_a_mismatch_at_its_end() -> None:
    mismatch = token_ids.first_mismatch([turn([1, 2], [3, 4]), turn([1, 2, 3], [4])])

    assert mismatch == {"turn": 1, "position": 3, "expected": 4, "found": None}


def test_calls_without_ids_are_skipped_and_no_ids_at_all_leaves_continuity_unknown() -> None:
    logprobs_only: TokenInfo = {"generation_log_probs": [-0.3], "generation_tokens": ["Hi"]}

    skipping = token_ids.summarize([turn([1], [2]), logprobs_only, turn([1, 2, 8], [9])])
    unknown = token_ids.summarize([logprobs_only, {}])

    assert skipping["contiguous"] is True
    assert skipping["turns"][1] == {
        "turn": 1,
        "prompt_tokens": None,
        "generation_tokens": None,
        "generation_log_probs": 1,
    }
    assert unknown["contiguous"] is None and unknown["first_mismatch"] is None


def test_stripping_removes_only_the_token_fields_and_copies_only_when_it_must() -> None:
    clean = [{"type": "message", "role": "user", "content": "Hi"}, {"type": "function_call_output", "call_id": "c"}]
    marked = [clean[0], {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", **turn([1], [2])}]

    assert token_ids.strip_items(clean) is clean
    assert token_ids.strip_items(marked) == [
        clean[0],
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ]
    assert "prompt_token_ids" in marked[1], "the caller's items are not changed"


def test_responses_logprobs_are_read_from_the_output_text_parts() -> None:
    part = {
        "type": "output_text",
        "text": "Hi!",
        "logprobs": [{"token": "Hi", "logprob": -0.2}, {"token": "!", "logprob": -0.1}],
    }
    response = {"output": [{"type": "message", "role": "assistant", "content": [part]}]}

    assert token_ids.responses_token_info(response) == {
        "generation_log_probs": [-0.2, -0.1],
        "generation_tokens": ["Hi", "!"],
    }
    assert token_ids.responses_token_info({"output": [{"type": "message", "content": [{"type": "output_text"}]}]}) == {}


# ------------------------------------------------------------------------------------------------ a model server


@contextmanager
def model_server(upstream: Any, path: str = "/v1", **settings: Any) -> Iterator[str]:
    """`upstream` (an ASGI app) and an openai_model pointed at it; yields the model server's URL."""
    with serve_in_thread(upstream) as upstream_url:
        block = openai_model_block(upstream_url + path, model="stub/vllm-policy", **settings)
        with serve_config({"policy_model": block}) as (config, _servers):
            yield config.instances["policy_model"].url()


def responses(url: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    answer = httpx.post(f"{url}/v1/responses", json={"input": items, "tools": [WEATHER_TOOL]}, timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def tool_round(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two calls of a weather rollout: the tool call, then the answer after the tool output."""
    first = responses(url, [QUESTION])
    call = first["output"][-1]
    second = responses(
        url,
        [QUESTION, *first["output"], {"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny"}],
    )
    return first, second


def test_off_by_default_nothing_is_asked_and_nothing_is_added() -> None:
    stub = VLLMStub()
    with model_server(stub) as url:
        answer = responses(url, [QUESTION])

    assert not {"logprobs", "return_token_ids", "return_tokens_as_token_ids"} & set(stub.requests[0])
    assert "token_info" not in answer["nemo_gym"]
    assert not FIELDS & {key for item in answer["output"] for key in item}


def test_vllm_gives_exact_ids_on_the_last_item_of_each_call() -> None:
    stub = VLLMStub()
    with model_server(stub, return_token_id_information=True) as url:
        first, second = tool_round(url)

    request = stub.requests[0]
    assert request["logprobs"] is True and request["return_token_ids"] is True and request["return_tokens_as_token_ids"]
    call = first["output"][-1]
    expected_prompt = tokenize(stub.render_prompt(request["messages"], request["tools"]))
    assert call["prompt_token_ids"] == expected_prompt
    assert call["generation_token_ids"] == tokenize(
        stub.render_message(
            {"tool_calls": [{"function": {"name": call["name"], "arguments": call["arguments"]}}]}, in_history=False
        )
    ) + [2]
    assert len(call["generation_log_probs"]) == len(call["generation_token_ids"])
    assert all(lp < 0 for lp in call["generation_log_probs"])
    assert first["nemo_gym"]["token_info"] == {"source": "vllm", "token_ids": "present", "logprobs": "present"}
    assert not FIELDS & set(stub.requests[1]["messages"][1]), "earlier items' token fields never go upstream"
    summary = token_ids.summarize([token_ids.call_info(first["output"]), token_ids.call_info(second["output"])])
    assert summary["contiguous"] is True


def test_an_old_vllm_gives_the_same_ids_through_token_id_strings_and_tokenize() -> None:
    new, old = VLLMStub(), VLLMStub(return_token_ids=False)
    with model_server(new, return_token_id_information=True) as url:
        exact = responses(url, [QUESTION])["output"][-1]
    with model_server(old, return_token_id_information=True) as url:
        answer = responses(url, [QUESTION])

    assert "prompt_token_ids" not in json.dumps(old.requests)  # it really had to ask /tokenize
    found = answer["output"][-1]
    assert {k: found[k] for k in FIELDS & set(found)} == {k: exact[k] for k in FIELDS & set(exact)}
    assert answer["nemo_gym"]["token_info"]["token_ids"] == "present"


def test_a_server_without_token_fields_is_reported_missing_not_silently() -> None:
    with model_server(StubUpstream().app(), upstream_flavor="vllm", return_token_id_information=True) as url:
        answer = responses(url, [QUESTION])

    status = answer["nemo_gym"]["token_info"]
    assert status["token_ids"] == "missing" and status["logprobs"] == "missing"
    assert "not vLLM" in status["detail"] and "upstream_flavor: openai" in status["detail"]
    assert not FIELDS & {key for item in answer["output"] for key in item}


def test_chat_completions_carry_the_fields_on_the_message_and_strip_them_from_input() -> None:
    stub = VLLMStub()
    with model_server(stub, return_token_id_information=True) as url:
        chat = httpx.post(
            f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}, timeout=30
        )
        message = chat.json()["choices"][0]["message"]
        again = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}, message, {"role": "user", "content": "Paris?"}]},
            timeout=30,
        )

    assert message["prompt_token_ids"] and message["generation_token_ids"][-1] == 2
    assert len(message["generation_log_probs"]) == len(message["generation_token_ids"])
    assert chat.json()["nemo_gym"]["token_info"]["source"] == "vllm"
    assert again.status_code == 200 and not FIELDS & set(stub.requests[1]["messages"][1])


def test_a_responses_upstream_gets_input_items_without_token_fields() -> None:
    stub = StubUpstream()
    with model_server(stub.app(), api="responses", return_token_id_information=True) as url:
        first = responses(url, [QUESTION])
        marked = [dict(item, **turn([1], [2])) for item in first["output"]]
        responses(
            url,
            [QUESTION, *marked, {"type": "function_call_output", "call_id": marked[0]["call_id"], "output": "Sunny"}],
        )

    sent = stub.requests[-1][2]
    assert sent["include"] == ["message.output_text.logprobs"]
    assert not FIELDS & {key for item in sent["input"] for key in item}
    assert first["nemo_gym"]["token_info"]["source"] == "responses_logprobs"


# ------------------------------------------------------------------------------------------------ whole rollouts


@contextmanager
def vllm_servers(stub: VLLMStub, **settings: Any) -> Iterator[tuple[GlobalConfig, dict[str, BaseServer]]]:
    """The vLLM stub, openai_model on it, simple_weather, its agent and a head server; (config, servers)."""
    with serve_in_thread(stub) as upstream_url:
        block = openai_model_block(upstream_url + "/v1", model="stub/vllm-policy", **settings)
        with serve_config({"policy_model": block, **simple_weather_blocks()}) as (config, servers):
            head_port = free_port()
            with serve_in_thread(build_head_app(config), port=head_port):
                yield GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={}), servers


@contextmanager
def vllm_cluster(stub: VLLMStub, **settings: Any) -> Iterator[GlobalConfig]:
    with vllm_servers(stub, **settings) as (config, _servers):
        yield config


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def model_calls(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The items that carry a model call's token information, in order."""
    return [item for item in record["response"]["output"] if "generation_token_ids" in item]


def test_records_carry_every_calls_ids_as_one_stream_a_trainer_can_walk(tmp_path: Path) -> None:
    with vllm_cluster(VLLMStub(record=False), return_token_id_information=True) as config:
        collect_rows(config, EXAMPLES, tmp_path / "out.jsonl", limit=6)

    for record in read_records(tmp_path / "out.jsonl"):
        meta = record["response"]["nemo_gym"]
        calls = model_calls(record)
        assert len(calls) == record["usage"]["calls"] == len(meta["token_ids"]["turns"])
        assert meta["token_ids"]["contiguous"] is True and meta["token_ids"]["first_mismatch"] is None
        seen: list[int] = []
        for item in calls:  # what NeMo RL does with a rollout's output items
            assert item["prompt_token_ids"][: len(seen)] == seen
            seen = item["prompt_token_ids"] + item["generation_token_ids"]


def test_the_agent_sends_neither_the_model_server_nor_the_verifier_the_ids(tmp_path: Path) -> None:
    """Earlier turns' ids ride in the record, not in every later request: the model server would only strip them,
    and a verifier grades the trajectory, not its tokens."""
    seen_inputs: list[list[dict[str, Any]]] = []
    seen_verified: list[list[dict[str, Any]]] = []
    with vllm_servers(VLLMStub(record=False), return_token_id_information=True) as (config, servers):
        model, resources = servers["policy_model"], servers["simple_weather"]
        answer, verify = model.responses, resources.verify  # type: ignore[attr-defined]

        async def spy_responses(params: dict[str, Any]) -> dict[str, Any]:
            seen_inputs.append(params["input"])
            return await answer(params)

        async def spy_verify(session: Any, request: Any) -> Any:
            seen_verified.append(request.response["output"])
            return await verify(session, request)

        model.responses, resources.verify = spy_responses, spy_verify  # type: ignore[attr-defined]
        collect_rows(config, EXAMPLES, tmp_path / "out.jsonl", limit=1)

    record = read_records(tmp_path / "out.jsonl")[0]
    assert len(model_calls(record)) == len(seen_inputs) == 2, "the record keeps every call's ids"
    assert seen_inputs[1] and not FIELDS & {key for item in seen_inputs[1] for key in item}
    assert seen_verified and not FIELDS & {key for item in seen_verified[0] for key in item}


def test_a_history_the_upstream_retokenised_is_flagged_in_the_record(tmp_path: Path) -> None:
    stub = VLLMStub(retokenize_history=True, record=False)
    with vllm_cluster(stub, return_token_id_information=True) as config:
        collect_rows(config, EXAMPLES, tmp_path / "out.jsonl", limit=1)

    record = read_records(tmp_path / "out.jsonl")[0]
    first = model_calls(record)[0]
    message = {"tool_calls": [{"function": {"name": first["name"], "arguments": first["arguments"]}}]}
    generated = tokenize(stub.render_message(message, in_history=False))  # `{"city": "Paris"}` as sampled
    rendered = tokenize(stub.render_message(message, in_history=True))  # `{"city":"Paris"}` in the next prompt
    offset = next(i for i, (a, b) in enumerate(zip(generated, rendered, strict=False)) if a != b)
    summary = record["response"]["nemo_gym"]["token_ids"]
    assert summary["contiguous"] is False
    assert summary["first_mismatch"] == {
        "turn": 1,
        "position": len(first["prompt_token_ids"]) + offset,
        "expected": generated[offset],
        "found": rendered[offset],
    }


def test_without_the_setting_records_are_unchanged(tmp_path: Path) -> None:
    with vllm_cluster(VLLMStub(record=False)) as config:
        collect_rows(config, EXAMPLES, tmp_path / "out.jsonl", limit=2)

    for record in read_records(tmp_path / "out.jsonl"):
        assert "token_ids" not in record["response"]["nemo_gym"] and "token_info" not in record["response"]["nemo_gym"]
        assert not FIELDS & {key for item in record["response"]["output"] for key in item}


def test_openrouter_logprobs_are_recorded_without_ids_and_said_so(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    with emulated_cluster(emulator, return_token_id_information=True) as config:
        collect_rows(config, EXAMPLES, tmp_path / "out.jsonl", limit=2)

    assert all(r.body.get("logprobs") is True for r in emulator.requests if r.path.endswith("/chat/completions"))
    for record in read_records(tmp_path / "out.jsonl"):
        meta = record["response"]["nemo_gym"]
        assert meta["token_info"] == {"source": "chat_logprobs", "token_ids": "missing", "logprobs": "present"}
        items = [i for i in record["response"]["output"] if "generation_log_probs" in i]
        assert len(items) == record["usage"]["calls"]
        for item in items:
            assert len(item["generation_tokens"]) == len(item["generation_log_probs"]) > 0
            assert "prompt_token_ids" not in item and "generation_token_ids" not in item
        assert meta["token_ids"]["contiguous"] is None


def test_a_provider_without_logprobs_is_said_in_every_record_and_logged_once_per_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    with (
        caplog.at_level(logging.WARNING),
        emulated_cluster(emulator, model="anthropic/claude-3.5-sonnet", return_token_id_information=True) as config,
    ):
        collect_rows(config, EXAMPLES, tmp_path / "out.jsonl", limit=5)

    records = read_records(tmp_path / "out.jsonl")
    for record in records:
        status = record["response"]["nemo_gym"]["token_info"]
        assert status["logprobs"] == "missing" and "returned no logprobs although asked" in status["detail"]
        assert not FIELDS & {key for item in record["response"]["output"] for key in item}
    warnings = [r.getMessage() for r in caplog.records if "token information missing" in r.getMessage()]
    assert len(warnings) == 1 and "anthropic/claude-3.5-sonnet" in warnings[0]
    assert sum(r["usage"]["calls"] for r in records) > 1


def test_the_stub_tokenizer_keeps_prompts_prefix_stable() -> None:
    """The property the vLLM stub's contiguity rests on: a newline never merges into the next piece."""
    assert pieces("assistant\nHello") == ["assistant", "\n", "Hello"]
    assert tokenize(IM_END) == [2]
