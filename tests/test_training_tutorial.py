"""docs/training_data.md, run as written: its offline commands in order, on the real bundled model, in a fresh
working directory, then the files they wrote checked with a real consumer (`datasets`)."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nemo_gym.config.paths import project_root
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.testing.local_model import NEEDS_LOCAL_MODEL

pytestmark = [*NEEDS_LOCAL_MODEL, pytest.mark.slow]

TUTORIAL = project_root() / "docs" / "training_data.md"
OFFLINE_SECTION = "## Offline, step by step"


def offline_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced bash/python block of the offline section, in order."""
    text = TUTORIAL.read_text()
    start = text.index(OFFLINE_SECTION)
    end = text.index("\n## ", start + len(OFFLINE_SECTION))
    return re.findall(r"```(bash|python)\n(.*?)```", text[start:end], flags=re.S)


def commands_of(block: str) -> list[list[str]]:
    """Each shell command of a block, continuation lines joined, as argv."""
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A directory where the tutorial's relative paths resolve, with the head server on a free port."""
    for folder in ("responses_api_models", "resources_servers", "responses_api_agents"):
        (tmp_path / folder).symlink_to(project_root() / folder)
    (tmp_path / "env.yaml").write_text(yaml.safe_dump({"head_server": {"port": free_port()}}))
    yield tmp_path


def test_the_tutorial_blocks_are_what_this_test_runs() -> None:
    blocks = offline_blocks()
    programs = [argv[0] for lang, code in blocks if lang == "bash" for argv in commands_of(code)]
    assert programs == [
        "ng_run",
        "ng_collect_rollouts",
        "ng_reward_profile",
        "ng_export",
        "ng_export",
        "ng_export",
        "ng_reverify",
    ]
    assert [lang for lang, _ in blocks].count("python") == 1


def test_the_offline_tutorial_runs_end_to_end(workdir: Path) -> None:
    blocks = offline_blocks()
    (start_servers,) = commands_of(blocks[0][1])
    assert start_servers[0] == "ng_run"
    servers = CommandProcess(start_servers, cwd=workdir)
    try:
        assert servers.wait_for("ng_run ready", timeout_s=600), servers.output
        for lang, code in blocks[1:]:
            argvs = commands_of(code) if lang == "bash" else [[sys.executable, "-c", code]]
            for argv in argvs:
                done = subprocess.run(
                    argv, cwd=workdir, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL
                )
                assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                if lang == "python":
                    python_output = done.stdout
    finally:
        servers.send(signal.SIGINT, group=True)
        servers.wait(timeout_s=60)
        servers.close()

    results = workdir / "results" / "training"
    records = [json.loads(line) for line in (results / "rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 8 * 4 and all(r["error"] is None for r in records)
    model_items = [
        item
        for r in records
        for item in r["response"]["output"]
        if item["type"] in ("message", "function_call") and "generation_token_ids" in item
    ]
    assert model_items, "token ids were asked for and must be on the model's output items"
    for item in model_items:
        assert len(item["generation_token_ids"]) == len(item["generation_log_probs"]) > 0
        assert item["prompt_token_ids"] and all(lp <= 0.0 for lp in item["generation_log_probs"])
    assert all("contiguous" in r["response"]["nemo_gym"]["token_ids"] for r in records)

    profile = [json.loads(line) for line in (results / "profile.jsonl").read_text().splitlines()]
    assert len(profile) == 8 and all(p["rollouts"] == 4 for p in profile)
    kept = [json.loads(line) for line in (results / "mixed_rows.jsonl").read_text().splitlines()]
    mixed = [p for p in profile if 0 < p["pass_rate"] < 1]
    assert len(kept) == len(mixed)

    # the python block printed what it loaded; the counts agree with the export summaries
    sft_summary = json.loads((results / "sft.export.json").read_text())
    dpo_summary = json.loads((results / "dpo.export.json").read_text())
    rl_summary = json.loads((results / "rl.export.json").read_text())
    assert f"{sft_summary['rows_written']} SFT conversations;" in python_output
    assert f"{dpo_summary['rows_written']} DPO pairs;" in python_output
    assert f"{rl_summary['rows_written']} RL groups" in python_output
    assert rl_summary["rows_written"] == 8 and "get_weather <- a tool call survives" in python_output

    rescored = [json.loads(line) for line in (results / "rescored.jsonl").read_text().splitlines()]
    assert len(rescored) == len(records)
    assert all(r["reward"] == r["previous_reward"] for r in rescored), "the verifier did not change"
