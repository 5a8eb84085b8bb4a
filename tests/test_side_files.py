"""Files beside the output that cannot be written (`<stem>.metrics.json`, `<stem>.settings.json`, `<output>.torn`,
`<output>.retried_failures.jsonl`) end the collection with a message naming the file, the reason and the fix, and
lose nothing: no record, no byte of the output, not even the metrics. Something in the way at the file's path (a
directory) stands for every reason a write fails, and fails the same way for root."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.run import RunStopped
from nemo_gym.config.paths import project_root
from nemo_gym.config.types import GlobalConfig
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.testing.emulated import EMULATOR_KEY, FAST_RETRY, collect_rows, emulated_cluster, write_rows

AGENT = "simple_weather_simple_agent"


@pytest.fixture(scope="module")
def cluster() -> Iterator[GlobalConfig]:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=3))
    with emulated_cluster(emulator, retry=FAST_RETRY) as config:
        yield config


def test_unwritable_metrics_end_the_run_with_the_metrics_in_the_message(cluster: GlobalConfig, tmp_path: Path) -> None:
    rows, output = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out.jsonl"
    (tmp_path / "out.metrics.json").mkdir()

    with pytest.raises(RunStopped) as info:
        collect_rows(cluster, rows, output)

    message = str(info.value)
    assert f"3 rollouts finished in this run and are kept in {output}." in message
    assert f"Cannot write {tmp_path / 'out.metrics.json'}: Is a directory." in message
    assert f"remove or rename the directory {tmp_path / 'out.metrics.json'}" in message
    metrics = json.loads(message[message.index("\n{") :])
    assert (metrics["rollouts"], metrics["succeeded"] + metrics["failed"]) == (3, 3)
    assert len(output.read_text().splitlines()) == 3


def test_unwritable_settings_stop_before_any_rollout(cluster: GlobalConfig, tmp_path: Path) -> None:
    rows, output = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out.jsonl"
    (tmp_path / "out.settings.json").mkdir()

    with pytest.raises(InputError) as info:
        collect_rows(cluster, rows, output)

    message = str(info.value)
    assert f"Cannot write {tmp_path / 'out.settings.json'}: Is a directory." in message
    assert "no rollout has run" in message and "then re-run the same command." in message
    assert output.read_text() == ""


def test_an_unwritable_torn_file_leaves_the_output_as_it_was(cluster: GlobalConfig, tmp_path: Path) -> None:
    rows, output = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out.jsonl"
    collect_rows(cluster, rows, output, limit=2)
    torn = output.read_bytes() + b'{"row_hash": "abc", "rew'
    output.write_bytes(torn)
    (tmp_path / "out.jsonl.torn").mkdir()

    with pytest.raises(InputError) as info:
        collect_rows(cluster, rows, output)

    message = str(info.value)
    assert f"Cannot write {tmp_path / 'out.jsonl.torn'}: Is a directory." in message
    assert f"{output} ends with an unfinished line (24 bytes" in message and "nothing was changed" in message
    assert output.read_bytes() == torn


def test_unwritable_retried_failures_leave_the_output_as_it_was(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=2))
    emulator.inject("openai/gpt-4o-mini", ["finish_reason_error"] * 4)  # two rows' own failures
    rows, output = write_rows(tmp_path / "rows.jsonl", 4), tmp_path / "out.jsonl"
    with emulated_cluster(emulator, retry={**FAST_RETRY, "max_attempts": 2}) as config:
        assert collect_rows(config, rows, output, num_samples_in_parallel=1)["failed"] == 2
        before = output.read_bytes()
        (tmp_path / "out.jsonl.retried_failures.jsonl").mkdir()

        with pytest.raises(InputError) as info:
            collect_rows(config, rows, output, retry_failed=True)

    message = str(info.value)
    assert f"Cannot write {tmp_path / 'out.jsonl.retried_failures.jsonl'}: Is a directory." in message
    assert "the 2 failed records" in message and "nothing was moved" in message
    assert output.read_bytes() == before
    assert not (tmp_path / "out.jsonl.tmp").exists()


def test_ng_collect_rollouts_reports_unwritable_metrics_without_a_traceback(
    cluster: GlobalConfig, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 2)
    (tmp_path / "out.metrics.json").mkdir()
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH")])),
    }

    result = subprocess.run(
        [
            "ng_collect_rollouts",
            f"+agent_name={AGENT}",
            f"+input_jsonl_fpath={rows}",
            "+output_jsonl_fpath=out.jsonl",
            f"+head_server.port={cluster.data['head_server']['port']}",
        ],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 3, result.stderr[-3000:]
    assert "Cannot write out.metrics.json: Is a directory." in result.stderr
    assert '"rollouts": 2' in result.stderr
    assert "Traceback" not in result.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
