"""ng_export: rollout files to SFT, DPO and RL datasets that real consumers read: `datasets` loads every output, SFT
and DPO rows render through real chat templates with their tool calls, and a push reaches a Hub over HTTP."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nemo_gym.cli.export import main as ng_export
from nemo_gym.collection.advantages import group_advantages
from nemo_gym.collection.records import build_record
from nemo_gym.collection.run import collect
from nemo_gym.collection.run import settings_from as collect_settings_from
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import project_root
from nemo_gym.config.types import GlobalConfig
from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks
from nemo_gym.testing.local_model import HAS_LOCAL_EXTRA
from nemo_gym.testing.stub_upstream import StubUpstream
from nemo_gym.training.export import ExportRefused, ExportSummary, export, summary_path
from nemo_gym.training.export_settings import settings_from
from nemo_gym.training.hub import HubError
from nemo_gym.training.sft import SftFormat
from nemo_gym.training.writers import ParquetWriter

EXAMPLES = project_root() / "resources_servers/simple_weather/data/example.jsonl"
ROWS: list[JSONObject] = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
AGENT = "simple_weather_simple_agent"
WEATHER_TOOL_CHAT = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": ROWS[0]["responses_create_params"]["tools"][0]["parameters"],
        "description": "Get the current weather for a city.",
        "strict": False,
    },
}


# ------------------------------------------------------------------------------------------------ records


def trajectory(
    city: str, answer: str, *, call_id: str = "call_1", reasoning: str | None = None, tokens: bool = False
) -> JSONObject:
    """An agent's final response for one tool call and an answer, as simple_agent returns it."""
    call: JSONObject = {
        "id": "fc_1",
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": "get_weather",
        "arguments": json.dumps({"city": city}),
    }
    message: JSONObject = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": answer, "annotations": []}],
    }
    if tokens:  # what a model server with token information on records on each call's last item
        call.update(prompt_token_ids=[1, 2, 3], generation_token_ids=[7, 8], generation_log_probs=[-0.5, -0.25])
        message.update(
            prompt_token_ids=[1, 2, 3, 7, 8, 9], generation_token_ids=[10, 11], generation_log_probs=[-1.0, -0.1]
        )
    output: list[JSONObject] = []
    if reasoning is not None:
        output.append(
            {
                "id": "rs_1",
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": reasoning}],
            }
        )
    output += [
        call,
        {"type": "function_call_output", "call_id": call_id, "output": json.dumps({"city": city, "temp_c": 18})},
        message,
    ]
    meta: JSONObject = {"models": ["stub/weather-model"], "steps": 2, "stop_reason": "answered"}
    if tokens:
        meta["token_ids"] = {"turns": [], "contiguous": True, "first_mismatch": None}
    return {
        "id": "resp_1",
        "object": "response",
        "model": "stub/weather-model",
        "status": "completed",
        "output": output,
        "usage": {
            "input_tokens": 100,
            "output_tokens": 20,
            "total_tokens": 120,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
            "cost": 0.0001,
            "calls": 2,
        },
        "nemo_gym": meta,
    }


def record(
    row_index: int,
    repeat: int,
    reward: float | None,
    *,
    city: str | None = None,
    agent: str = AGENT,
    fingerprint: str | None = "f1f1f1f1f1f1f1f1",
    error: str | None = None,
    row: JSONObject | None = None,
    **response: Any,
) -> JSONObject:
    """A record as the collector writes it (build_record), for row `row_index` of simple_weather's examples."""
    row = row if row is not None else ROWS[row_index]
    city = city or row["expected_cities"][0]
    result = None if error else {"reward": reward, "response": trajectory(city, f"It is sunny in {city}.", **response)}
    return dict(
        build_record(
            row=row,
            row_index=row_index,
            repeat_index=repeat,
            agent_name=agent,
            result=result,
            error=error,
            latency_s=0.1,
            fingerprint=fingerprint,
        )
    )


def write(path: Path, records: list[JSONObject], *extra_lines: str) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(line + "\n" for line in extra_lines))
    return path


def run(tmp_path: Path, inputs: Path | list[Path], output: str, **settings: Any) -> ExportSummary:
    given = [str(p) for p in inputs] if isinstance(inputs, list) else str(inputs)
    return export(settings_from({"input_jsonl_fpath": given, "output_fpath": str(tmp_path / output), **settings}))


def jsonl(path: Path) -> list[JSONObject]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load(path: Path) -> datasets.Dataset:
    """What a trainer does: `datasets.load_dataset` on the file."""
    builder = "parquet" if path.suffix == ".parquet" else "json"
    return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(path.parent / ".hf"))


def present(value: Any) -> Any:
    """A row as `datasets` hands it back, without the null keys a struct column gives messages that lack them, and
    with floats to 9 digits (`datasets` reads nested JSON of varying shape with a fast, inexact float parser)."""
    if isinstance(value, dict):
        return {k: present(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [present(v) for v in value]
    if isinstance(value, float):
        return round(value, 9)
    return value


@pytest.fixture
def three_repeats(tmp_path: Path) -> Path:
    """Two rows, three scored rollouts each (rewards 1, 0, 0.5 / 0, 0, 1), plus one failed rollout."""
    return write(
        tmp_path / "rollouts.jsonl",
        [
            record(0, 0, 1.0),
            record(0, 1, 0.0, city="Lyon"),
            record(1, 0, 0.0, city="Leeds"),
            record(0, 2, 0.5, city="Nice"),
            record(1, 1, 0.0, city="Derby"),
            record(1, 2, 1.0),
            record(1, 3, None, error="ServerCallError: the upstream refused"),
        ],
    )


# ------------------------------------------------------------------------------------------------ sft


def test_sft_rows_are_openai_chat_messages_with_tools_and_trace_fields(three_repeats: Path, tmp_path: Path) -> None:
    summary = run(tmp_path, three_repeats, "sft.jsonl", format="sft")

    rows = jsonl(tmp_path / "sft.jsonl")
    assert summary.rows_written == len(rows) == 6, "every scored rollout, the failed one left out"
    first = next(r for r in rows if r["row_index"] == 0 and r["repeat_index"] == 0)
    assert first["messages"] == [
        {"role": "system", "content": ROWS[0]["responses_create_params"]["input"][0]["content"]},
        {"role": "user", "content": "What's the weather like in Paris today?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"city": "Paris", "temp_c": 18}'},
        {"role": "assistant", "content": "It is sunny in Paris."},
    ]
    assert first["tools"] == [WEATHER_TOOL_CHAT]
    assert {k: first[k] for k in ("agent_name", "fingerprint", "reward", "models")} == {
        "agent_name": AGENT,
        "fingerprint": "f1f1f1f1f1f1f1f1",
        "reward": 1.0,
        "models": ["stub/weather-model"],
    }
    assert first["row_hash"] == jsonl(three_repeats)[0]["row_hash"]

    report = json.loads(summary_path(tmp_path / "sft.jsonl").read_text())
    assert report["rows_written"] == 6 and report["input"]["skipped"] == {"failed": 1}
    assert any("failed rollouts" in line and "rollouts.jsonl:7" in line for line in report["skipped"])


def test_sft_jsonl_and_parquet_load_with_datasets_as_written(three_repeats: Path, tmp_path: Path) -> None:
    run(tmp_path, three_repeats, "sft.jsonl", format="sft")
    run(tmp_path, three_repeats, "sft.parquet", format="sft")
    written = jsonl(tmp_path / "sft.jsonl")

    from_jsonl = load(tmp_path / "sft.jsonl")
    from_parquet = load(tmp_path / "sft.parquet")

    assert [present(row) for row in from_jsonl] == present(written)
    assert from_parquet.features["tools"].dtype == "string", "tool schemas vary per row: JSON text in Parquet"
    for loaded, row in zip(from_parquet, written, strict=True):
        assert json.loads(loaded["tools"]) == row["tools"]
        assert present(loaded["messages"]) == row["messages"]
        assert loaded["reward"] == row["reward"] and loaded["row_hash"] == row["row_hash"]


def test_min_reward_and_best_of_n_keep_the_best_rollout_of_each_row_first_on_ties(
    three_repeats: Path, tmp_path: Path
) -> None:
    best = run(tmp_path, three_repeats, "best.jsonl", format="sft", best_of_n=True)
    assert [(r["row_index"], r["repeat_index"]) for r in jsonl(tmp_path / "best.jsonl")] == [(0, 0), (1, 2)]
    assert best.dropped["counts"] == {"not_best_of_n": 4}

    passing = run(tmp_path, three_repeats, "pass.jsonl", format="sft", min_reward=0.5)
    assert sorted(r["reward"] for r in jsonl(tmp_path / "pass.jsonl")) == [0.5, 1.0, 1.0]
    assert passing.dropped["counts"] == {"below_min_reward": 3}
    assert any("below +min_reward" in line for line in passing.lines())

    ties = write(tmp_path / "ties.jsonl", [record(2, 0, 0.0, city="X"), record(2, 1, 1.0, city="Y"), record(2, 2, 1.0)])
    run(tmp_path, ties, "ties_best.jsonl", format="sft", best_of_n=True)
    assert [r["repeat_index"] for r in jsonl(tmp_path / "ties_best.jsonl")] == [1]


def test_reasoning_is_dropped_unless_kept_as_reasoning_content(tmp_path: Path) -> None:
    source = write(tmp_path / "r.jsonl", [record(0, 0, 1.0, reasoning="Paris: call the tool.")])

    run(tmp_path, source, "plain.jsonl", format="sft")
    run(tmp_path, source, "kept.parquet", format="sft", keep_reasoning=True)

    plain = jsonl(tmp_path / "plain.jsonl")[0]["messages"]
    assert not any("reasoning_content" in m or "Paris: call" in json.dumps(m) for m in plain)
    kept = present(load(tmp_path / "kept.parquet")[0]["messages"])
    assert kept[2]["reasoning_content"] == "Paris: call the tool." and kept[2]["tool_calls"]
    assert [m for m in kept if "reasoning_content" in m] == [kept[2]]


def test_instructions_and_a_plain_string_input_become_system_and_user_messages(tmp_path: Path) -> None:
    row = {"id": "s", "responses_create_params": {"instructions": "Be brief.", "input": "Weather in Oslo?"}}
    source = write(tmp_path / "s.jsonl", [record(0, 0, 1.0, row=row, city="Oslo")])

    run(tmp_path, source, "s.jsonl.out.jsonl", format="sft")

    (only,) = jsonl(tmp_path / "s.jsonl.out.jsonl")
    assert only["messages"][:2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]
    assert only["tools"] == []


# ------------------------------------------------------------------------------------------------ dpo


def test_dpo_pairs_the_best_and_worst_rollout_of_each_row_in_trl_conversational_form(
    three_repeats: Path, tmp_path: Path
) -> None:
    summary = run(tmp_path, three_repeats, "dpo.jsonl", format="dpo")

    pairs = jsonl(tmp_path / "dpo.jsonl")
    assert [(p["row_index"], p["chosen_repeat_index"], p["rejected_repeat_index"]) for p in pairs] == [
        (0, 0, 1),
        (1, 2, 0),  # row 1: two rollouts tie for worst, the first of them is taken
    ]
    pair = pairs[0]
    assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
    assert [m["role"] for m in pair["chosen"]] == ["assistant", "tool", "assistant"]
    assert pair["chosen"][0]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert pair["rejected"][0]["tool_calls"][0]["function"]["arguments"] == '{"city": "Lyon"}'
    assert (pair["chosen_reward"], pair["rejected_reward"]) == (1.0, 0.0)
    assert pair["tools"] == [WEATHER_TOOL_CHAT] and pair["agent_name"] == AGENT
    assert pair["chosen_models"] == pair["rejected_models"] == ["stub/weather-model"]
    assert summary.rows_written == 2

    assert [present(row) for row in load(tmp_path / "dpo.jsonl")] == present(pairs)
    run(tmp_path, three_repeats, "dpo.parquet", format="dpo")
    from_parquet = load(tmp_path / "dpo.parquet")
    assert [present(r["chosen"]) for r in from_parquet] == [p["chosen"] for p in pairs]
    assert [json.loads(r["tools"]) for r in from_parquet] == [p["tools"] for p in pairs]


def test_dpo_takes_more_pairs_widest_margin_first_and_counts_rows_without_a_pair(
    three_repeats: Path, tmp_path: Path
) -> None:
    run(tmp_path, three_repeats, "many.jsonl", format="dpo", max_pairs_per_row=3, min_margin=0.5)
    row0 = [
        (p["chosen_repeat_index"], p["rejected_repeat_index"])
        for p in jsonl(tmp_path / "many.jsonl")
        if p["row_index"] == 0
    ]
    assert row0 == [(0, 1), (0, 2), (2, 1)], "margins 1, 0.5, 0.5"

    flat = write(
        tmp_path / "flat.jsonl",
        [record(0, 0, 1.0), record(0, 1, 1.0), record(1, 0, 0.0, city="Leeds"), record(1, 1, 1.0)],
    )
    summary = run(tmp_path, flat, "flat_dpo.jsonl", format="dpo", min_margin=0.5)
    assert summary.rows_written == 1
    assert summary.dropped["counts"] == {"no_pair": 2}
    assert any("+min_margin" in line for line in summary.dropped_explained)


# ------------------------------------------------------------------------------------------------ rl


def test_rl_has_one_line_per_row_with_group_advantages(three_repeats: Path, tmp_path: Path) -> None:
    run(tmp_path, three_repeats, "rl.jsonl", format="rl")

    lines = jsonl(tmp_path / "rl.jsonl")
    assert [line["row_index"] for line in lines] == [0, 1]
    row0 = lines[0]
    rewards = [r["reward"] for r in row0["rollouts"]]
    assert rewards == [1.0, 0.0, 0.5] and [r["repeat_index"] for r in row0["rollouts"]] == [0, 1, 2]
    assert [r["advantage"] for r in row0["rollouts"]] == pytest.approx(group_advantages(rewards))
    assert row0["reward_mean"] == pytest.approx(0.5) and row0["reward_std"] == pytest.approx((1 / 6) ** 0.5)
    assert [m["role"] for m in row0["prompt"]] == ["system", "user"] and row0["tools"] == [WEATHER_TOOL_CHAT]
    assert [m["role"] for m in row0["rollouts"][0]["completion"]] == ["assistant", "tool", "assistant"]
    assert all("turns" not in r and "token_ids" not in r for line in lines for r in line["rollouts"]), (
        "no token information recorded: no empty keys"
    )
    assert len(lines[1]["rollouts"]) == 3, "the failed rollout is no part of the group"

    run(tmp_path, three_repeats, "raw.jsonl", format="rl", normalize_std=False)
    assert [r["advantage"] for r in jsonl(tmp_path / "raw.jsonl")[0]["rollouts"]] == pytest.approx([0.5, -0.5, 0.0])


def test_rl_carries_token_ids_and_logprobs_per_turn_when_recorded(tmp_path: Path) -> None:
    source = write(tmp_path / "t.jsonl", [record(0, 0, 1.0, tokens=True), record(0, 1, 0.0, city="Lyon")])

    run(tmp_path, source, "rl.jsonl", format="rl")
    run(tmp_path, source, "rl.parquet", format="rl")

    with_tokens, without = jsonl(tmp_path / "rl.jsonl")[0]["rollouts"]
    assert with_tokens["turns"] == [
        {"prompt_token_ids": [1, 2, 3], "generation_token_ids": [7, 8], "generation_log_probs": [-0.5, -0.25]},
        {
            "prompt_token_ids": [1, 2, 3, 7, 8, 9],
            "generation_token_ids": [10, 11],
            "generation_log_probs": [-1.0, -0.1],
        },
    ]
    assert with_tokens["token_ids"]["contiguous"] is True
    assert "turns" not in without and "token_ids" not in without
    loaded = load(tmp_path / "rl.parquet")[0]["rollouts"]
    assert present(loaded[0]["turns"]) == with_tokens["turns"]
    assert json.loads(loaded[0]["token_ids"]) == with_tokens["token_ids"]
    assert loaded[1]["turns"] is None and loaded[1]["token_ids"] is None
    assert [present(row) for row in load(tmp_path / "rl.jsonl")] == present(jsonl(tmp_path / "rl.jsonl"))


# ------------------------------------------------------------------------------------------------ mixed inputs


def test_mixed_environments_are_refused_unless_one_is_picked_or_mixing_allowed(tmp_path: Path) -> None:
    weather = write(tmp_path / "weather.jsonl", [record(0, 0, 1.0), record(1, 0, 1.0)])
    other = write(tmp_path / "other.jsonl", [record(2, 0, 1.0, agent="math_agent")])

    with pytest.raises(ExportRefused) as refused:
        run(tmp_path, [weather, other], "mixed.jsonl", format="sft")
    message = str(refused.value)
    assert f"2 agents (environments): {AGENT} (2), math_agent (1)" in message
    assert "+agent_name=" in message and "+allow_mixed=true" in message
    assert not (tmp_path / "mixed.jsonl").exists() and not list(tmp_path.glob("mixed*"))

    picked = run(tmp_path, [weather, other], "picked.jsonl", format="sft", agent_name="math_agent")
    assert [r["agent_name"] for r in jsonl(tmp_path / "picked.jsonl")] == ["math_agent"]
    assert picked.read["skipped"] == {"other_agent": 2}
    run(tmp_path, [weather, other], "both.jsonl", format="sft", allow_mixed=True)
    assert len(jsonl(tmp_path / "both.jsonl")) == 3


def test_rollouts_of_different_settings_are_refused_unless_one_fingerprint_is_picked(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", [record(0, 0, 1.0, fingerprint="aaaaaaaaaaaaaaaa")])
    new = write(
        tmp_path / "new.jsonl",
        [
            record(0, 1, 0.0, city="Lyon", fingerprint="bbbbbbbbbbbbbbbb"),
            record(1, 0, 1.0, fingerprint="bbbbbbbbbbbbbbbb"),
        ],
    )

    with pytest.raises(ExportRefused, match=r"2 different settings \(fingerprints\): bbbbbbbbbbbbbbbb \(2\), aaaa"):
        run(tmp_path, [old, new], "mixed.jsonl", format="dpo")

    summary = run(tmp_path, [old, new], "picked.jsonl", format="sft", fingerprint="bbbbbbbbbbbbbbbb")
    assert summary.rows_written == 2 and summary.dropped["counts"] == {"other_fingerprint": 1}
    assert run(tmp_path, [old, new], "all.jsonl", format="dpo", allow_mixed=True).rows_written == 1


# ------------------------------------------------------------------------------------------------ bad input


def test_torn_foreign_and_unscored_lines_are_counted_and_explained_by_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_reward = record(2, 0, 1.0)
    no_reward["reward"] = None
    source = write(
        tmp_path / "rollouts.jsonl",
        [record(0, 0, 1.0), no_reward, record(1, 0, None, error="TimeoutError: verifier")],
        '{"question": "not a rollout"}',
        '{"row_index": 3, "row_hash": "ab',
    )
    with pytest.raises(SystemExit) as exited:
        ng_export(["+format=sft", f"+input_jsonl_fpath={source}", f"+output_fpath={tmp_path / 'out.jsonl'}"])

    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert "wrote 1 sft conversations" in printed
    for reason, line in (("not JSON", 5), ("not rollout records", 4), ("without a numeric `reward`", 2), ("failed", 3)):
        assert any(reason in text and f"rollouts.jsonl:{line}" in text for text in printed.splitlines()), reason
    report = json.loads((tmp_path / "out.export.json").read_text())
    assert report["input"]["skipped"] == {"failed": 1, "no_reward": 1, "not_a_record": 1, "not_json": 1}


def test_nothing_to_export_is_refused_with_why_and_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(tmp_path / "r.jsonl", [record(0, 0, 0.0), record(0, 1, 0.0, city="Lyon")])

    with pytest.raises(SystemExit) as exited:
        ng_export(["+format=dpo", f"+input_jsonl_fpath={source}", f"+output_fpath={tmp_path / 'dpo.jsonl'}"])

    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert "nothing to write" in error and "without two rollouts at least +min_margin apart" in error
    assert "Traceback" not in error and not (tmp_path / "dpo.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["+format=sft", "+output_fpath=o.jsonl"], r"\+input_jsonl_fpath is required"),
        (["+format=csv", "+input_jsonl_fpath=r.jsonl", "+output_fpath=o.jsonl"], r"\+format='csv' is not valid: pass"),
        (
            ["+format=sft", "+input_jsonl_fpath=r.jsonl", "+output_fpath=o.jsonl", "+min_margn=1"],
            r"did you mean \+min_margin",
        ),
        (["+format=sft", "+input_jsonl_fpath=r.jsonl", "+output_fpath=o.jsonl", "+min_margin=1"], r"\+format=dpo only"),
        (["+format=dpo", "+input_jsonl_fpath=r.jsonl", "+output_fpath=o.jsonl", "+min_margin=0"], r"\+min_margin=0"),
        (["+format=sft", "+input_jsonl_fpath=r.jsonl", "+output_fpath=r.jsonl"], "is one of the inputs"),
        (
            ["+format=sft", "+input_jsonl_fpath=r.jsonl", "+output_fpath=o.jsonl", "+push_to_hub=no-slash"],
            "repository id",
        ),
        (["+format=sft", "+input_jsonl_fpath=missing.jsonl", "+output_fpath=o.jsonl"], "missing.jsonl: no such file"),
    ],
)
def test_bad_settings_exit_2_with_what_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r.jsonl", [record(0, 0, 1.0)])
    with pytest.raises(SystemExit) as exited:
        ng_export(args)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "Traceback" not in error
    assert re.search(message, error), error


def test_parquet_is_written_in_row_groups_of_bounded_size(three_repeats: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    run(tmp_path, three_repeats, "sft.jsonl", format="sft")
    rows = jsonl(tmp_path / "sft.jsonl")
    export_format = SftFormat()
    with ParquetWriter(tmp_path / "small_groups.parquet", export_format, batch_bytes=2_000) as writer:
        for row in rows * 5:
            writer.write(row)
        assert not (tmp_path / "small_groups.parquet").exists(), "nothing at the output path until it is complete"
        writer.commit()

    assert pq.ParquetFile(tmp_path / "small_groups.parquet").num_row_groups >= 10
    assert [present(r["messages"]) for r in load(tmp_path / "small_groups.parquet")] == [
        r["messages"] for r in rows * 5
    ]


# ------------------------------------------------------------------------------------------------ chat templates


class Rendered(Exception):
    """Raised by the stand-in model with the prompt llama.cpp's handler built for it."""


class PromptCatcher:
    """What llama.cpp's chat handler calls once it has rendered its template: the prompt, without a model."""

    verbose = False

    def create_completion(self, prompt: str, **_: Any) -> None:
        raise Rendered(prompt)


def chatml_function_calling(messages: list[JSONObject], tools: list[JSONObject]) -> str:
    """The prompt the local model server (llama.cpp's `chatml-function-calling` format) builds for these messages."""
    from llama_cpp.llama_chat_format import chatml_function_calling as handler

    with pytest.raises(Rendered) as rendered:
        handler(llama=PromptCatcher(), messages=messages, tools=tools, tool_choice="auto")  # type: ignore[arg-type]
    return html.unescape(str(rendered.value.args[0]))  # the handler's template HTML-escapes what it renders


def gguf_template(messages: list[JSONObject]) -> str:
    """The bundled model's own chat template, from its GGUF metadata, rendered as transformers renders one."""
    import llama_cpp
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from responses_api_models.local_model.app import bundled_model_path

    model = llama_cpp.Llama(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    template = ImmutableSandboxedEnvironment().from_string(model.metadata["tokenizer.chat_template"])
    return template.render(messages=messages, add_generation_prompt=False)


@pytest.mark.local_model
@pytest.mark.skipif(not HAS_LOCAL_EXTRA, reason="needs the [local] extra")
@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_sft_and_dpo_rows_render_through_real_chat_templates_with_their_tool_calls(
    three_repeats: Path, tmp_path: Path, suffix: str
) -> None:
    run(tmp_path, three_repeats, f"sft.{suffix}", format="sft")
    run(tmp_path, three_repeats, f"dpo.{suffix}", format="dpo")

    def tools_of(row: JSONObject) -> list[JSONObject]:
        return json.loads(row["tools"]) if isinstance(row["tools"], str) else row["tools"]

    sft = present(load(tmp_path / f"sft.{suffix}")[0])
    prompt = chatml_function_calling(sft["messages"], tools_of(sft))
    assert 'functions.get_weather:\n{"city": "Paris"}' in prompt, "the assistant's tool call, as the model writes it"
    assert (
        "functions.get_weather:\n" + json.dumps(WEATHER_TOOL_CHAT["function"]["parameters"], sort_keys=True) in prompt
    )
    assert "It is sunny in Paris." in prompt
    # SmolLM2's own template renders every message's content, so tool results survive there, but not tool calls;
    # the chatml-function-calling template above (what the local model server uses) renders calls, not results.
    own = gguf_template(sft["messages"])
    assert '<|im_start|>tool\n{"city": "Paris", "temp_c": 18}<|im_end|>' in own
    assert "<|im_start|>assistant\n<|im_end|>" in own and '{"city": "Paris"}' not in own

    pair = present(load(tmp_path / f"dpo.{suffix}")[0])
    chosen = chatml_function_calling(pair["prompt"] + pair["chosen"], tools_of(pair))
    rejected = chatml_function_calling(pair["prompt"] + pair["rejected"], tools_of(pair))
    assert 'functions.get_weather:\n{"city": "Paris"}' in chosen and "It is sunny in Paris." in chosen
    assert 'functions.get_weather:\n{"city": "Lyon"}' in rejected and "It is sunny in Lyon." in rejected
    assert '{"city": "Lyon", "temp_c": 18}' in gguf_template(pair["prompt"] + pair["rejected"])


# ------------------------------------------------------------------------------------------------ hub


class FakeHub:
    """The Hub's upload endpoints on loopback (create repo, validate card, preupload, commit), keeping what a commit
    carries and who sent it."""

    def __init__(self) -> None:
        self.repos: dict[str, JSONObject] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.authorizations: set[str] = set()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def remember_token(request: Request, call_next: Any) -> Any:
            self.authorizations.add(request.headers.get("authorization", ""))
            return await call_next(request)

        @app.post("/api/repos/create")
        async def create(request: Request) -> JSONObject:
            body = await request.json()
            repo = f"{body['organization']}/{body['name']}"
            self.repos[repo] = body
            return {"url": f"{request.base_url}datasets/{repo}", "name": repo, "id": repo}

        @app.post("/api/validate-yaml")
        async def validate() -> JSONObject:
            return {"errors": [], "warnings": []}

        @app.post("/api/datasets/{org}/{name}/preupload/{revision}")
        async def preupload(request: Request) -> JSONObject:
            body = await request.json()
            return {
                "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]]
            }

        @app.post("/api/datasets/{org}/{name}/commit/{revision}")
        async def commit(org: str, name: str, request: Request) -> JSONResponse:
            stored = self.files.setdefault(f"{org}/{name}", {})
            for line in (await request.body()).splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    stored[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
            return JSONResponse(
                {
                    "commitUrl": f"{request.base_url}datasets/{org}/{name}/commit/1",
                    "commitOid": "1" * 40,
                    "pullRequestUrl": None,
                }
            )

        return app

    def checkout(self, repo: str, directory: Path) -> Path:
        for path, content in self.files[repo].items():
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            (directory / path).write_bytes(content)
        return directory


@pytest.fixture
def fake_hub() -> Iterator[tuple[FakeHub, str]]:
    hub = FakeHub()
    with serve_in_thread(hub.app()) as url:
        yield hub, url


HF_TOKEN = "hf_testtokenTESTtoken0123456789abcdef"


def test_push_to_hub_commits_the_data_and_a_card_that_datasets_loads(
    three_repeats: Path,
    tmp_path: Path,
    fake_hub: tuple[FakeHub, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub, url = fake_hub
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    output = tmp_path / "sft.parquet"

    with pytest.raises(SystemExit) as exited:
        ng_export(
            [
                "+format=sft",
                f"+input_jsonl_fpath={three_repeats}",
                f"+output_fpath={output}",
                "+push_to_hub=my-org/weather-sft",
                f"+hub_endpoint={url}",
            ]
        )

    printed = capsys.readouterr()
    assert exited.value.code == 0, printed.err
    assert hub.repos["my-org/weather-sft"]["type"] == "dataset"
    assert hub.repos["my-org/weather-sft"]["visibility"] == "private"
    assert hub.authorizations == {f"Bearer {HF_TOKEN}"}
    assert set(hub.files["my-org/weather-sft"]) == {"README.md", "data/train-00000-of-00001.parquet"}
    assert hub.files["my-org/weather-sft"]["data/train-00000-of-00001.parquet"] == output.read_bytes()
    card = hub.files["my-org/weather-sft"]["README.md"].decode()
    assert 'load_dataset("my-org/weather-sft"' in card and "JSON text" in card
    repo = hub.checkout("my-org/weather-sft", tmp_path / "repo")
    pushed = datasets.load_dataset(str(repo), split="train", cache_dir=str(tmp_path / ".hf"))
    assert len(pushed) == 6 and present(pushed[0]["messages"])[2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert "pushed to" in printed.out
    for text in (printed.out, printed.err, summary_path(output).read_text()):
        assert HF_TOKEN not in text


def test_a_push_dry_run_writes_what_would_be_pushed_and_needs_no_token(
    three_repeats: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    summary = run(
        tmp_path,
        three_repeats,
        "rl.jsonl",
        format="rl",
        push_to_hub="me/weather-rl",
        push_to_hub_dry_run_dir=str(tmp_path / "dry"),
    )

    assert summary.hub == {"repo_id": "me/weather-rl", "dry_run_dir": str(tmp_path / "dry")}
    assert (tmp_path / "dry/data/train.jsonl").read_bytes() == (tmp_path / "rl.jsonl").read_bytes()
    assert (tmp_path / "dry/README.md").read_text().startswith("---\nconfigs:\n")
    loaded = datasets.load_dataset(str(tmp_path / "dry"), split="train", cache_dir=str(tmp_path / ".hf"))
    assert [present(r) for r in loaded] == present(jsonl(tmp_path / "rl.jsonl"))


def test_a_push_without_a_token_fails_before_any_work_and_a_failed_push_hides_the_token(
    three_repeats: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubError, match="HF_TOKEN environment variable"):
        run(tmp_path, three_repeats, "sft.jsonl", format="sft", push_to_hub="me/x")
    assert not (tmp_path / "sft.jsonl").exists()

    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(HubError) as failed:
        run(tmp_path, three_repeats, "sft.jsonl", format="sft", push_to_hub="me/x", hub_endpoint=nobody)
    assert "pushing to the Hub repository me/x failed" in str(failed.value)
    assert "The dataset itself is written" in str(failed.value) and (tmp_path / "sft.jsonl").exists()
    assert HF_TOKEN not in str(failed.value)


# ------------------------------------------------------------------------------------------------ a real collection


API_KEY = "sk-or-v1-export-test-key-24680"


@pytest.fixture
def collected(tmp_path: Path) -> Path:
    """6 simple_weather rows x 2 repeats collected through the stub upstream, model server, resources server and
    agent, all on loopback."""
    stub = StubUpstream(api_key=API_KEY)
    output = tmp_path / "collected.jsonl"
    with serve_in_thread(stub.app()) as upstream_url:
        data = {"policy_model": openai_model_block(upstream_url + "/v1", api_key=API_KEY), **simple_weather_blocks()}
        with serve_config(data) as (config, _servers):
            head_port = free_port()
            with serve_in_thread(build_head_app(config), port=head_port):
                settings = {
                    **config.data,
                    "head_server": {"port": head_port},
                    "agent_name": AGENT,
                    "input_jsonl_fpath": str(EXAMPLES),
                    "output_jsonl_fpath": str(output),
                    "limit": 6,
                    "num_repeats": 2,
                }
                cfg = GlobalConfig(data=settings, origins={})
                asyncio.run(collect(cfg, collect_settings_from(cfg)))
    return output


def test_a_real_collection_exports_to_every_format_that_datasets_loads(collected: Path, tmp_path: Path) -> None:
    records = jsonl(collected)
    assert len(records) == 12

    sft = run(tmp_path, collected, "sft.parquet", format="sft")
    rl = run(tmp_path, collected, "rl.jsonl", format="rl")

    assert sft.rows_written == 12 and sft.skipped == [] and sft.dropped["counts"] == {}
    assert rl.rows_written == 6
    conversations = [present(r["messages"]) for r in load(tmp_path / "sft.parquet")]
    for messages in conversations:
        assert [m["role"] for m in messages][:2] == ["system", "user"]
        calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls", [])]
        results = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
        assert calls and {c["id"] for c in calls} == results, "every tool call answered by its result"
        assert all(json.loads(c["function"]["arguments"])["city"] for c in calls)
    rows = load(tmp_path / "rl.jsonl")
    assert sorted(len(r["rollouts"]) for r in rows) == [2] * 6
    for row in rows:
        rewards = [r["reward"] for r in row["rollouts"]]
        assert [r["advantage"] for r in row["rollouts"]] == pytest.approx(group_advantages(rewards))
    with pytest.raises(ExportRefused, match="nothing to write"):  # the stub answers a row the same every time
        run(tmp_path, collected, "dpo.jsonl", format="dpo")


def test_settings_reject_a_dry_run_without_a_repository() -> None:
    with pytest.raises(ConfigError, match=r"pass \+push_to_hub=<org>/<name> with it"):
        settings_from(
            {
                "format": "sft",
                "input_jsonl_fpath": str(EXAMPLES),
                "output_fpath": "o.jsonl",
                "push_to_hub_dry_run_dir": "d",
            }
        )
