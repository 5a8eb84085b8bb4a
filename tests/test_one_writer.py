"""One writer per output, never the dataset as the output, and duplicates said out loud: a second collector (or a
comparison, or a Ray-sharded run) on a held output is refused at once naming the holder; a lock left by a killed
collector is taken over; the lock goes on every way out; output == input is refused; readers and the viewer warn
about rollouts recorded twice."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.output_lock import LockOwner, OutputLock, OutputLocked, lock_path, process_start_ticks
from nemo_gym.collection.records import build_record
from nemo_gym.collection.resume import SettingsChanged, read_records, scan_output
from nemo_gym.collection.run import RunStopped
from nemo_gym.config.paths import project_root
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.emulated import EMULATOR_KEY, FAST_RETRY, collect_rows, emulated_cluster, write_rows
from nemo_gym.testing.processes import collector_argv as collector_argv_of
from nemo_gym.testing.processes import wait_for_lines

AGENT = "simple_weather_simple_agent"
HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from nemo_gym.collection.output_lock import OutputLock\n"
    "lock = OutputLock.acquire(Path(sys.argv[1]), command='ng_collect_rollouts (the test holder)')\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


def keys_of(path: Path) -> list[tuple[str, int]]:
    return [(r["row_hash"], r["repeat_index"]) for r in map(json.loads, path.read_text().splitlines())]


def collector_argv(rows: Path, output: Path, head_port: int, *extra: str) -> list[str]:
    return collector_argv_of(AGENT, rows, output, head_port, *extra)


def run(argv: list[str], cwd: Path, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


@pytest.fixture
def cluster() -> Iterator[tuple[OpenRouterEmulator, int]]:
    """The emulator answering in ~150 ms, the servers, and a head server on a port a subprocess can use."""
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], latency_ms=150, seed=5))
    with emulated_cluster(emulator, retry=FAST_RETRY) as config:
        yield emulator, int(config.data["head_server"]["port"])


@contextmanager
def held_elsewhere(output: Path) -> Iterator[int]:
    """Another process holding `output`'s lock, as a running collector does; yields its pid."""
    holder = CommandProcess([sys.executable, "-c", HOLDER, str(output)], cwd=output.parent)
    try:
        assert holder.wait_for("held", 30), holder.output
        yield holder.process.pid
    finally:
        holder.close()


# ---------------------------------------------------------------- a second writer is refused


@pytest.mark.slow
def test_a_second_collector_is_refused_at_once_and_the_first_records_each_rollout_once(
    cluster: tuple[OpenRouterEmulator, int], tmp_path: Path
) -> None:
    _, head_port = cluster
    rows, output = write_rows(tmp_path / "rows.jsonl", 120), tmp_path / "out.jsonl"
    argv = collector_argv(rows, output, head_port)
    first = CommandProcess(argv, cwd=tmp_path)
    try:
        wait_for_lines(output, 3)
        owner = LockOwner.parse(lock_path(output).read_bytes())
        assert owner is not None and owner.pid == first.process.pid and "ng_collect_rollouts" in owner.command
        later = [
            subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for command in (argv, [*argv, "+overwrite=true"])
        ]
        second, overwrite = (command.communicate(timeout=120) for command in later)
        assert first.process.poll() is None, "the first collector must still be running for this test to mean much"
        lines_meanwhile = output.read_text().count("\n")
        assert first.wait(180) == 0, first.output[-3000:]
    finally:
        first.close()
    for command, (stdout, stderr) in zip(later, (second, overwrite), strict=True):
        assert command.returncode == 2, stdout + stderr
        assert f"is being written by another collector: pid {first.process.pid}, started {owner.started_at}" in stderr
        assert "Wait for it to end" in stderr and f"kill {first.process.pid}" in stderr
        assert "Resuming" not in stdout and "Traceback" not in stderr
    keys = keys_of(output)
    assert len(keys) == len(set(keys)) == 120, "one record per rollout: the refused runs wrote nothing"
    assert lines_meanwhile >= 3, "+overwrite=true did not start the held output over"
    assert not lock_path(output).exists(), "released at the end"


def test_a_sharded_collection_is_refused_on_a_held_output_before_it_touches_ray(
    cluster: tuple[OpenRouterEmulator, int], tmp_path: Path
) -> None:
    emulator, head_port = cluster
    rows, output = write_rows(tmp_path / "rows.jsonl", 4), tmp_path / "out.jsonl"
    calls = len(emulator.requests)  # the model server's preflight at start-up
    with held_elsewhere(output) as holder:
        refused = run(collector_argv(rows, output, head_port, "+ray_address=local", "+num_collectors=2"), tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert f"is being written by another collector: pid {holder}" in refused.stderr
    assert "Ray" not in refused.stderr and not output.exists() and len(emulator.requests) == calls


@pytest.mark.slow
def test_ng_compare_models_is_refused_before_any_server_starts_on_a_model_file_a_collector_holds(
    tmp_path: Path,
) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=3))
    out = tmp_path / "comparison"
    held = out / "rollouts" / "openai_gpt-4o-mini.jsonl"
    held.parent.mkdir(parents=True)
    with serve_in_thread(emulator.app()) as url, held_elsewhere(held) as holder:
        refused = run(
            [
                "ng_compare_models",
                "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, "
                "resources_servers/simple_weather/configs/simple_weather.yaml]",
                f"+policy_base_url={url}/api/v1",
                f"+policy_api_key={EMULATOR_KEY}",
                "+policy_model_name=openai/gpt-4o-mini",
                "+models=[meta-llama/llama-3.1-8b-instruct, openai/gpt-4o-mini]",
                f"+input_jsonl_fpath={project_root() / 'resources_servers/simple_weather/data/example.jsonl'}",
                f"+output_dir={out}",
                "+limit=2",
            ],
            project_root(),
        )
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert f"{held} is being written by another collector: pid {holder}" in refused.stderr
    assert emulator.requests == [], "no server started, no model called"
    assert not held.exists() and not (out / "servers.log").exists()
    assert not (out / "rollouts" / "meta-llama_llama-3.1-8b-instruct.jsonl").exists(), "no model ran before"
    assert not lock_path(out / "rollouts" / "meta-llama_llama-3.1-8b-instruct.jsonl").exists(), "locks released"


# ---------------------------------------------------------------- a lock left behind, and the lock on every way out


@pytest.mark.slow
def test_a_lock_left_by_a_killed_collector_is_taken_over_and_the_same_command_completes_the_run(
    cluster: tuple[OpenRouterEmulator, int], tmp_path: Path
) -> None:
    _, head_port = cluster
    rows, output = write_rows(tmp_path / "rows.jsonl", 60), tmp_path / "out.jsonl"
    argv = collector_argv(rows, output, head_port)
    first = CommandProcess(argv, cwd=tmp_path)
    try:
        wait_for_lines(output, 8)
        first.send(signal.SIGKILL)
        first.wait(10)
    finally:
        first.close()
    left = LockOwner.parse(lock_path(output).read_bytes())
    assert left is not None and left.pid == first.process.pid, "kill -9 leaves the lock file"
    assert 8 <= len(keys_of(output)) < 60

    rerun = run(argv, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    took_over = [line for line in rerun.stdout.splitlines() if line.startswith("Took over the lock")]
    assert took_over == [
        f"Took over the lock of {output}: the collector that held it (pid {left.pid}, started {left.started_at}, "
        f"running `{left.command}`) is no longer running; it ended without releasing it (killed?)."
    ]
    assert "Resuming" in rerun.stdout
    keys = keys_of(output)
    assert len(keys) == len(set(keys)) == 60
    assert not lock_path(output).exists()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signalled_collector_releases_the_lock_and_the_rerun_finds_it_free(
    cluster: tuple[OpenRouterEmulator, int], tmp_path: Path, stop: signal.Signals
) -> None:
    _, head_port = cluster
    rows, output = write_rows(tmp_path / "rows.jsonl", 60), tmp_path / "out.jsonl"
    argv = collector_argv(rows, output, head_port)
    first = CommandProcess(argv, cwd=tmp_path)
    try:
        wait_for_lines(output, 5)
        assert lock_path(output).exists()
        first.send(stop)
        assert first.wait(60) == 130, first.output[-3000:]
    finally:
        first.close()
    assert not lock_path(output).exists()
    rerun = run(argv, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "Took over" not in rerun.stdout
    keys = keys_of(output)
    assert len(keys) == len(set(keys)) == 60


def test_the_lock_is_held_by_the_run_and_released_after_a_normal_end_a_refusal_and_a_402_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[OutputLock] = []

    class Recorded(OutputLock):
        @classmethod
        def acquire(cls, output: Path, *, command: str) -> OutputLock:
            lock = OutputLock.acquire(output, command=command)
            with pytest.raises(OutputLocked):  # held, and exclusive
                OutputLock.acquire(output, command="another writer")
            taken.append(lock)
            return lock

    monkeypatch.setattr("nemo_gym.collection.run.OutputLock", Recorded)
    rows, output = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out.jsonl"
    with emulated_cluster(OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))) as config:
        collect_rows(config, rows, output, responses_create_params={"temperature": 0.2})
        assert len(taken) == 1 and not lock_path(output).exists()
        with pytest.raises(SettingsChanged):
            collect_rows(config, rows, output, responses_create_params={"temperature": 0.9})
        assert len(taken) == 2 and not lock_path(output).exists()
    broke = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], credits_usd=0.0004, seed=1))
    spent = tmp_path / "spent.jsonl"
    with (
        emulated_cluster(broke, retry=FAST_RETRY, preflight=False) as config,
        pytest.raises(RunStopped, match="402"),
    ):
        collect_rows(config, write_rows(tmp_path / "many.jsonl", 200), spent, num_samples_in_parallel=4)
    assert len(taken) == 3 and taken[2].path == lock_path(spent) and not lock_path(spent).exists()
    assert 0 < len(keys_of(spent)) < 200
    for path in (output, spent):
        with OutputLock.acquire(path, command="check") as lock:
            assert lock.note() is None, "released cleanly, not left to be taken over"


def test_a_held_lock_refuses_even_in_the_same_process_and_a_reused_pid_is_not_its_owner(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    with OutputLock.acquire(output, command="first") as lock:
        with pytest.raises(OutputLocked, match=f"pid {os.getpid()}"):
            OutputLock.acquire(tmp_path / "." / "out.jsonl", command="second")
        assert lock.owner.running() is True
    mine = process_start_ticks(os.getpid())
    assert mine is not None
    reused = LockOwner(pid=os.getpid(), host="", started_at="then", start_ticks=mine - 1, command="old")
    assert reused.running() is False, "same pid, another start time: another process"
    lock_path(output).write_bytes(orjson.dumps(dataclasses.asdict(reused)))
    with OutputLock.acquire(output, command="third") as lock:
        note = lock.note()
    assert note is not None and note.startswith(f"Took over the lock of {output}") and "no longer running" in note


def test_a_filesystem_without_file_locks_runs_unprotected_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr("nemo_gym.collection.output_lock.fcntl.flock", no_locks)
    output = tmp_path / "out.jsonl"
    with OutputLock.acquire(output, command="first") as lock:
        note = lock.note()
    assert note == (
        f"warning: cannot lock {lock_path(output)} (this filesystem does not support file locks); make sure no "
        f"other collector writes {output} at the same time."
    )
    assert not lock_path(output).exists()


# ---------------------------------------------------------------- the dataset is not an output


def dataset_and_its_other_name(tmp_path: Path, spelling: str) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    rows = write_rows(data / "rows.jsonl", 3)
    output = {
        "same": rows,
        "dotted": tmp_path / "data" / ".." / "data" / "rows.jsonl",
        "symlink": tmp_path / "link.jsonl",
        "hardlink": tmp_path / "hard.jsonl",
    }[spelling]
    if spelling == "symlink":
        output.symlink_to(rows)
    if spelling == "hardlink":
        os.link(rows, output)
    return rows, output


def test_output_equal_to_input_through_a_symlink_is_refused_by_the_command_and_the_input_is_unchanged(
    cluster: tuple[OpenRouterEmulator, int], tmp_path: Path
) -> None:
    emulator, head_port = cluster
    calls = len(emulator.requests)
    rows, output = dataset_and_its_other_name(tmp_path, "symlink")
    before = rows.read_bytes()
    refused = run(collector_argv(rows, output, head_port), tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"+output_jsonl_fpath={output} is the input file +input_jsonl_fpath={rows}" in refused.stderr
    assert rows.read_bytes() == before
    assert sorted(p.name for p in rows.parent.iterdir()) == ["rows.jsonl"], "nothing written beside it either"
    assert len(emulator.requests) == calls


@pytest.mark.parametrize("spelling", ["same", "dotted", "hardlink"])
def test_output_equal_to_input_is_refused_however_it_is_spelled(tmp_path: Path, spelling: str) -> None:
    rows, output = dataset_and_its_other_name(tmp_path, spelling)
    before = rows.read_bytes()
    with emulated_cluster(OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))) as config:
        with pytest.raises(InputError, match="is the input file"):
            collect_rows(config, rows, output)
        with pytest.raises(InputError, match="is the input file"):
            collect_rows(config, rows, output, overwrite=True)
    assert rows.read_bytes() == before
    assert sorted(p.name for p in rows.parent.iterdir()) == ["rows.jsonl"]


# ---------------------------------------------------------------- duplicates are said


def duplicated_file(path: Path) -> Path:
    """Five rollouts, two of them written twice (lines 4 and 6 repeat lines 1 and 2) and one of those a third time
    (line 7), plus a rollout of the same row with other settings (line 8: not a duplicate)."""
    records = [
        build_record(
            row={"id": f"r{i}", "responses_create_params": {"input": f"Weather in city {i}?"}},
            row_index=i,
            repeat_index=0,
            agent_name=AGENT,
            result={"reward": 1.0, "response": {"output": []}},
            error=None,
            latency_s=0.1,
            fingerprint="f1",
        )
        for i in range(5)
    ]
    other = {**records[0], "fingerprint": "f2"}
    lines = [records[0], records[1], records[2], records[0], records[3], records[1], records[0], other, records[4]]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    return path


def test_the_readers_warn_how_many_rollouts_are_duplicated_with_an_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = duplicated_file(tmp_path / "dup.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    expected = (
        f"warning: {path}: 3 record(s) repeat the rollout key of an earlier record with the same settings "
        f"(2 rollout(s) recorded more than once), e.g. row_hash {first['row_hash']} repeat_index 0 on lines 1, 4 "
        "and 7; were two collectors writing this file at once? Each rollout counts once (a success over a failure)."
    )
    state = scan_output(path)
    assert capsys.readouterr().err.splitlines() == [expected]
    assert len(state.done) == 5 and state.duplicates.extra_records == 3
    records = read_records(path)
    assert capsys.readouterr().err.splitlines() == [expected]
    assert len(records) == 5
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:3]))
    scan_output(clean)
    read_records(clean)
    assert capsys.readouterr().err == ""


def test_ng_collect_rollouts_warns_when_the_output_it_resumes_holds_a_rollout_twice(
    cluster: tuple[OpenRouterEmulator, int], tmp_path: Path
) -> None:
    _, head_port = cluster
    rows, output = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out.jsonl"
    done = run(collector_argv(rows, output, head_port), tmp_path)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    lines = output.read_text().splitlines()
    output.write_text("\n".join([*lines, lines[1]]) + "\n")  # a second writer's copy of the second rollout
    again = run(collector_argv(rows, output, head_port), tmp_path)
    assert again.returncode == 0, again.stderr
    key = json.loads(lines[1])
    assert (
        f"warning: {output}: 1 record(s) repeat the rollout key of an earlier record with the same settings "
        f"(1 rollout(s) recorded more than once), e.g. row_hash {key['row_hash']} repeat_index 0 on lines 2 and 4"
    ) in again.stderr
    assert "3 rollouts already done" in again.stdout


@pytest.mark.slow
def test_ng_compare_models_warns_about_a_model_file_holding_a_rollout_twice(tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 3)
    out = tmp_path / "comparison"
    (out / "rollouts").mkdir(parents=True)
    records = duplicated_file(out / "rollouts" / "openai_gpt-4o-mini.jsonl")
    report = run(
        [
            "ng_compare_models",
            "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, "
            "resources_servers/simple_weather/configs/simple_weather.yaml]",
            "+policy_base_url=http://127.0.0.1:9/api/v1",
            f"+policy_api_key={EMULATOR_KEY}",
            "+policy_model_name=openai/gpt-4o-mini",
            "+models=[openai/gpt-4o-mini]",
            f"+input_jsonl_fpath={rows}",
            f"+output_dir={out}",
            "+report_only=true",
        ],
        project_root(),
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert f"warning: {records}: 3 record(s) repeat the rollout key" in report.stderr
    assert "on lines 1, 4 and 7" in report.stderr


# ---------------------------------------------------------------- a Ray-sharded run holds the lock too


@pytest.mark.slow
def test_a_sharded_collection_holds_the_lock_while_its_actors_run(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from nemo_gym.testing.fast_upstream import FastUpstream

    loopback_env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    with serve_in_thread(FastUpstream(latency_s=0.2)) as url:
        model = tmp_path / "model.yaml"
        model.write_text(yaml.safe_dump(model_config(url)))
        head_port = free_port()
        ng_run = CommandProcess(
            [
                "ng_run",
                f"+config_paths=[{project_root() / 'resources_servers/simple_weather/configs/simple_weather.yaml'}, "
                f"{model}]",
                "+ray_address=local",
                f"+head_server.port={head_port}",
            ],
            cwd=tmp_path,
            env=loopback_env,
        )
        try:
            assert ng_run.wait_for("ng_run ready", 120), ng_run.output[-3000:]
            rows, output = write_rows(tmp_path / "rows.jsonl", 60), tmp_path / "sharded.jsonl"
            # No CPUs reserved: ng_run's servers take all a small machine's local cluster has. The token mode is
            # what ng_run's local cluster uses (ray_placement.connect does not set it for a collector yet).
            sharded_argv = collector_argv(
                rows, output, head_port, "+ray_address=local", "+num_collectors=2", "+collector_num_cpus=0"
            )
            sharded = CommandProcess(sharded_argv, cwd=tmp_path, env={**loopback_env, "RAY_AUTH_MODE": "token"})
            try:
                wait_for_lines(output, 2, timeout_s=120)
                plain = run(collector_argv(rows, output, head_port), tmp_path)
                assert sharded.process.poll() is None
                assert sharded.wait(300) == 0, sharded.output[-3000:]
            finally:
                sharded.close()
        finally:
            ng_run.close()
    assert plain.returncode == 2, plain.stderr
    assert f"is being written by another collector: pid {sharded.process.pid}" in plain.stderr
    keys = keys_of(output)
    assert len(keys) == len(set(keys)) == 60


def model_config(url: str) -> dict[str, Any]:
    return {
        "policy_model": {
            "responses_api_models": {
                "openai_model": {
                    "entrypoint": "app.py",
                    "base_url": url + "/v1",
                    "api_key": "sk-test-key-0001",
                    "model": "stub/weather-model",
                    "openrouter": False,
                    "preflight": False,
                }
            }
        }
    }
