"""A realistic rollouts file to try or test ng_viewer offline, at no cost.

Real collections of simple_weather against the OpenRouter emulator (tool calls and results, rewards that vary,
two models), plus two hand-written records: a failed rollout whose prompt is a plain string, and one whose every
text field is markup, served partly by a fallback model, to prove the page shows markup as text.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from nemo_gym.collection.records import build_record
from nemo_gym.protocol.types import RolloutRecord

MODELS = ("openai/gpt-4o-mini", "meta-llama/llama-3.1-8b-instruct")
MARKUP = '<script>window.__viewerInjected = true</script><img src=x onerror="window.__viewerInjected = true">'
MARKUP_MODEL = "evil/<b>bold</b>"
FAILED_ERROR = (
    "ServerCallError: policy_model /v1/responses answered 502 after 12 attempts: upstream "
    "502 Bad Gateway (provider OpenAI)\nlast attempt: connection reset by peer"
)
AGENT = "simple_weather_simple_agent"


def write_sample(directory: Path, *, rows: int = 12, models: tuple[str, ...] = MODELS) -> Path:
    """`<directory>/rollouts.jsonl`: `rows` rollouts per model, then the failed and the markup record."""
    from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
    from nemo_gym.testing.emulated import EMULATOR_KEY, collect_rows, emulated_cluster, write_rows

    directory.mkdir(parents=True, exist_ok=True)
    rows_path = write_rows(directory / "rows.jsonl", rows)
    output = directory / "rollouts.jsonl"
    parts = []
    for model in models:
        part = directory / f"rollouts_{model.replace('/', '_')}.jsonl"
        emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
        with emulated_cluster(emulator, model=model) as config:
            collect_rows(config, rows_path, part, num_samples_in_parallel=4, overwrite=True)
        parts.append(part.read_bytes())
    with output.open("wb") as handle:
        handle.write(b"".join(parts))
        for record in hand_written_records(first_row_index=rows):
            handle.write(orjson.dumps(record) + b"\n")
    return output


def hand_written_records(first_row_index: int = 0) -> list[RolloutRecord]:
    failed = build_record(
        row={"id": "failed-0", "responses_create_params": {"input": "Weather in Oslo?"}},
        row_index=first_row_index,
        repeat_index=0,
        agent_name=AGENT,
        result=None,
        error=FAILED_ERROR,
        latency_s=61.2,
    )
    return [failed, markup_record(first_row_index + 1)]


def markup_record(row_index: int) -> RolloutRecord:
    """Markup in the prompt, the arguments, the tool result, the answer, the verifier's reasons and a model id."""
    row = {
        "id": "markup-0",
        "expected_cities": ["Paris"],
        "responses_create_params": {
            "input": [
                {"role": "system", "content": "You are a weather assistant."},
                {"role": "user", "content": f"Weather in Paris? {MARKUP}"},
            ]
        },
    }
    turns = [{"model": "openai/gpt-4o-mini", "cost": 0.00002}, {"model": MARKUP_MODEL, "cost": 0.00001}]
    response = {
        "id": "resp-markup",
        "object": "response",
        "model": MARKUP_MODEL,
        "status": "completed",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": f"Think {MARKUP}"}]},
            {
                "type": "function_call",
                "call_id": "call_markup",
                "name": "get_weather",
                "arguments": orjson.dumps({"city": f"Paris{MARKUP}"}).decode(),
            },
            {
                "type": "function_call_output",
                "call_id": "call_markup",
                "output": orjson.dumps({"city": "Paris", "weather": f"sunny {MARKUP}"}).decode(),
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_markup",
                "status": "completed",
                "content": [{"type": "output_text", "annotations": [], "text": f"It is sunny in Paris. {MARKUP}"}],
            },
        ],
        "usage": {
            "input_tokens": 210,
            "output_tokens": 48,
            "total_tokens": 258,
            "input_tokens_details": {"cached_tokens": 64},
            "output_tokens_details": {"reasoning_tokens": 12},
            "cost": 0.00003,
            "cost_estimated": True,
            "calls": 2,
        },
        "nemo_gym": {"models": ["openai/gpt-4o-mini", MARKUP_MODEL], "retries": 1, "turns": turns},
    }
    result = {
        "reward": 0.5,
        "reasons": [f"the answer quoted {MARKUP}"],
        "expected_cities": ["Paris"],
        "response": response,
    }
    return build_record(
        row=row, row_index=row_index, repeat_index=0, agent_name=AGENT, result=result, error=None, latency_s=1.5
    )
