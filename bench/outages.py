"""Outages mid-run: kill the upstream, the model server or ng_run itself while `ng_collect_rollouts` runs, and check
that the collector records nothing for the rollouts the outage broke, stops (exit 3) with the command that resumes,
and that the same command completes the run exactly once the system is back.

    python bench/outages.py [rows=200] [parallel=8] [outage_timeout_s=5] [latency_ms=200] [kill_after=rows/4]
                            [blip_s=1] [scenarios=upstream,model_server,ng_run,upstream_blip] [output=FILE.json]

Scenarios, each in a fresh temporary directory with its own emulator (`ng_openrouter_emulator`, `latency_ms` per
call), `ng_run` (openai_model pointed at the emulator + simple_weather) and collector (`parallel` in flight,
`+outage_timeout_s`); once `kill_after` records are written:

- `upstream`: SIGKILL the emulator (the model server's base_url); restored by a new emulator on the same port;
- `model_server`: SIGKILL the model server's process (pid from the head server's /instances); ng_run then stops
  every server and exits; restored by starting ng_run again with the same config;
- `ng_run`: SIGKILL ng_run itself (its servers get SIGTERM from the kernel); restored the same way;
- `upstream_blip`: SIGKILL the emulator and start a new one on the same port `blip_s` later; the run must complete
  in one go.

Per scenario: the rows recorded when the collector stopped, junk failure records (records with an `error`: an outage
is never a sample, so this must be 0), the collector's exit code (3 expected), the seconds from the kill to its exit,
whether its message carries the resume command, and whether the *same* command, run again once the killed part is
back, completes the run exactly (exit 0, every (row_hash, repeat_index) once, no errors). Prints the figures as JSON
and a markdown table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from nemo_gym.collection.inputs import row_hash
from nemo_gym.collection.run import metrics_path
from nemo_gym.config.paths import project_root
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.testing.emulated import EMULATOR_KEY, write_rows
from nemo_gym.testing.processes import pid_alive

AGENT = "simple_weather_simple_agent"
MODEL = "openai/gpt-4o-mini"
CONFIG_PATHS = (
    "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml,"
    " resources_servers/simple_weather/configs/simple_weather.yaml]"
)
MODEL_OVERRIDES = (  # the model server gives up on a dead upstream quickly (the default retries for a minute)
    "+policy_model.responses_api_models.openai_model.retry.max_attempts=2",
    "+policy_model.responses_api_models.openai_model.retry.initial_backoff_s=0.05",
)
SCENARIOS = ("upstream", "model_server", "ng_run", "upstream_blip")
DEFAULTS: dict[str, Any] = {
    "rows": 200,
    "parallel": 8,
    "outage_timeout_s": 5.0,
    "latency_ms": 200.0,
    "kill_after": None,  # records written before the kill; default a quarter of the rows
    "blip_s": 1.0,
    "scenarios": ",".join(SCENARIOS),
    "output": None,
}
RESUME_TEXT = "re-run the same command to resume: ng_collect_rollouts"
READY_TIMEOUT_S = 120
RUN_TIMEOUT_S = 600


# ------------------------------------------------------------------------------------------------ processes


class Processes:
    """Every command a scenario starts, each in its own session (process group), all ended on exit however the
    scenario went: a group whose leader is gone may still hold children, so survivors are killed by group."""

    def __init__(self) -> None:
        self.started: list[CommandProcess] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self, argv: list[str], cwd: Path) -> CommandProcess:
        command = CommandProcess(argv, cwd=cwd)
        self.started.append(command)
        return command

    def survivors(self) -> list[psutil.Process]:
        """Processes still running (zombies aside) in any group this scenario started."""
        groups = {command.process.pid for command in self.started}
        found = []
        for process in psutil.process_iter(["pid", "status"]):
            try:
                if os.getpgid(process.pid) in groups and process.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def close(self) -> None:
        for command in reversed(self.started):
            with contextlib.suppress(Exception):
                command.close()
        for process in self.survivors():
            with contextlib.suppress(psutil.Error):
                process.kill()
        for command in self.started:
            with contextlib.suppress(Exception):
                command.process.wait(timeout=5)


def start_emulator(processes: Processes, workdir: Path, port: int, latency_ms: float) -> tuple[CommandProcess, float]:
    """`ng_openrouter_emulator` on `port`; the process and the seconds it took to be ready."""
    started = time.monotonic()
    emulator = processes.start(
        ["ng_openrouter_emulator", f"+port={port}", f"+keys=[{EMULATOR_KEY}]", f"+latency_ms={latency_ms:g}"],
        workdir,
    )
    if not emulator.wait_for("ng_openrouter_emulator ready", READY_TIMEOUT_S):
        raise RuntimeError("the emulator did not start:\n" + emulator.output[-3000:])
    return emulator, time.monotonic() - started


def start_ng_run(processes: Processes, workdir: Path) -> CommandProcess:
    ng_run = processes.start(["ng_run", CONFIG_PATHS, *MODEL_OVERRIDES], workdir)
    if not ng_run.wait_for("ng_run ready", READY_TIMEOUT_S):
        raise RuntimeError("ng_run did not become ready:\n" + ng_run.output[-3000:])
    return ng_run


def server_pids(head_port: int) -> dict[str, int]:
    instances = httpx.get(f"http://127.0.0.1:{head_port}/instances", timeout=10).json()["instances"]
    return {name: int(instance["pid"]) for name, instance in instances.items() if instance.get("pid")}


def wait_until_gone(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive after waiting up to `timeout_s` for them to end."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------------ the output


def records_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for_records(path: Path, count: int, collector: CommandProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while line_count(path) < count:
        if collector.process.poll() is not None:
            raise RuntimeError(
                f"the collector exited ({collector.process.returncode}) before {count} records:\n"
                + collector.output[-3000:]
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not reach {count} records in {timeout_s:g}s")
        time.sleep(0.02)


def exactness(output: Path, rows: Path) -> dict[str, Any]:
    """How the output compares with one record per row (one repeat), without errors."""
    expected = {(row_hash(json.loads(line)), 0) for line in rows.read_text().splitlines() if line.strip()}
    records = records_of(output)
    keys = [(r["row_hash"], r["repeat_index"]) for r in records]
    return {
        "records": len(records),
        "distinct": len(set(keys)),
        "duplicates": len(keys) - len(set(keys)),
        "missing": len(expected - set(keys)),
        "unexpected": len(set(keys) - expected),
        "errors": sum(1 for r in records if r.get("error") is not None),
        "exact": len(records) == len(expected)
        and set(keys) == expected
        and all(r.get("error") is None for r in records),
    }


def metrics_of(output: Path) -> dict[str, Any] | None:
    try:
        return json.loads(metrics_path(output).read_text())
    except (OSError, ValueError):
        return None


def run_figures(metrics: dict[str, Any] | None) -> dict[str, Any]:
    this_run = (metrics or {}).get("this_run") or {}
    keys = ("rollouts", "outages", "outage_wait_s", "rollouts_rerun_after_outage", "wall_time_s", "rollouts_per_s")
    return {key: this_run.get(key) for key in keys}


# ------------------------------------------------------------------------------------------------ one scenario


def run_scenario(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {"scenario": name}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"bench-outages-{name}-") as scratch, Processes() as processes:
        workdir = Path(scratch)
        try:
            _scenario(name, settings, workdir, processes, figures)
        except Exception as exc:  # a scenario that cannot be carried out is a figure too; the others still run
            figures["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            processes.close()
            figures["left_running_after_cleanup"] = len(processes.survivors())
    figures["scenario_s"] = round(time.monotonic() - started, 1)
    return figures


def _scenario(
    name: str, settings: dict[str, Any], workdir: Path, processes: Processes, figures: dict[str, Any]
) -> None:
    rows_count, latency_ms = settings["rows"], settings["latency_ms"]
    kill_after = settings["kill_after"] or max(1, rows_count // 4)
    emulator_port = free_port()
    head_port = free_port(exclude={emulator_port})
    (workdir / "env.yaml").write_text(
        yaml.safe_dump(
            {
                "policy_base_url": f"http://127.0.0.1:{emulator_port}/api/v1",
                "policy_api_key": EMULATOR_KEY,
                "policy_model_name": MODEL,
                "head_server": {"port": head_port},
            }
        )
    )
    emulator, _ = start_emulator(processes, workdir, emulator_port, latency_ms)
    ng_run = start_ng_run(processes, workdir)
    pids = server_pids(head_port)
    rows, output = write_rows(workdir / "rows.jsonl", rows_count), workdir / "out.jsonl"
    argv = [
        "ng_collect_rollouts",
        f"+agent_name={AGENT}",
        f"+input_jsonl_fpath={rows}",
        f"+output_jsonl_fpath={output}",
        f"+num_samples_in_parallel={settings['parallel']}",
        f"+outage_timeout_s={settings['outage_timeout_s']:g}",
        f"+head_server.port={head_port}",
    ]
    figures["command"] = " ".join(argv[:1] + [a.replace(str(workdir), "$WORKDIR") for a in argv[1:]])
    collector = processes.start(argv, workdir)
    wait_for_records(output, kill_after, collector, RUN_TIMEOUT_S)

    # The kill.
    if name in ("upstream", "upstream_blip"):
        emulator.send(signal.SIGKILL)
    elif name == "model_server":
        os.kill(pids["policy_model"], signal.SIGKILL)
    elif name == "ng_run":
        ng_run.send(signal.SIGKILL)
    else:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    killed_at = time.monotonic()
    figures["records_at_kill"] = line_count(output)

    if name == "upstream_blip":
        time.sleep(settings["blip_s"])
        start_emulator(processes, workdir, emulator_port, latency_ms)
        figures["upstream_down_s"] = round(time.monotonic() - killed_at, 2)
        code = collector.wait(RUN_TIMEOUT_S)
        figures["exit_code"] = code
        figures["seconds_to_end"] = round(time.monotonic() - killed_at, 2)
        figures["outage_reported"] = "Outage:" in collector.output
        check = exactness(output, rows)
        metrics = metrics_of(output)
        figures["junk_failure_records"] = check["errors"]
        figures["run"] = run_figures(metrics)
        figures["complete_exactly"] = code == 0 and check["exact"] and bool(metrics and metrics.get("complete"))
        figures["check"] = check
        if code != 0:
            figures["collector_output_tail"] = collector.output[-2000:]
        return

    noticed = collector.wait_for("Outage:", RUN_TIMEOUT_S)
    figures["seconds_to_outage_notice"] = round(time.monotonic() - killed_at, 2) if noticed else None
    code = collector.wait(RUN_TIMEOUT_S)
    stopped_at = time.monotonic()
    figures["exit_code"] = code
    figures["seconds_to_stop"] = round(stopped_at - killed_at, 2)
    kept = records_of(output)
    figures["rows_recorded_at_stop"] = len(kept)
    figures["junk_failure_records"] = sum(1 for r in kept if r.get("error") is not None)
    figures["outage_reported"] = "Outage:" in collector.output
    figures["resume_command_in_message"] = RESUME_TEXT in collector.output
    figures["stop_message"] = next(
        (line for line in collector.output.splitlines() if "did not answer for" in line or "stopped early" in line),
        None,
    )
    stopped_metrics = metrics_of(output)
    figures["stopped_run"] = run_figures(stopped_metrics)
    figures["metrics_at_stop"] = {
        key: (stopped_metrics or {}).get(key) for key in ("rollouts", "failed", "complete", "expected_rollouts")
    }
    if code != 3:
        figures["collector_output_tail"] = collector.output[-2000:]

    # Bring back what was killed.
    if name == "upstream":
        start_emulator(processes, workdir, emulator_port, latency_ms)
    else:
        if name == "model_server":
            try:
                figures["ng_run_exit_code"] = ng_run.wait(30)
            except Exception:
                figures["ng_run_exit_code"] = None
        # ng_run's servers end with it (SIGTERM from ng_run, or from the kernel when ng_run was SIGKILLed).
        left = wait_until_gone(list(pids.values()), 15)
        figures["servers_left_running"] = len(left)
        for pid in left:  # they would hold their ports; ng_run must be able to start again
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        start_ng_run(processes, workdir)

    again = processes.start(argv, workdir)
    resumed_code = again.wait(RUN_TIMEOUT_S)
    check = exactness(output, rows)
    metrics = metrics_of(output)
    figures["resumed_exit_code"] = resumed_code
    figures["resumed_run"] = run_figures(metrics)
    figures["resumed_check"] = check
    figures["resumed_complete_exactly"] = (
        resumed_code == 0 and check["exact"] and bool(metrics and metrics.get("complete"))
    )
    if resumed_code != 0:
        figures["resumed_output_tail"] = again.output[-2000:]


# ------------------------------------------------------------------------------------------------ report


def table(figures: dict[str, Any]) -> str:
    lines = [
        "| scenario | rows recorded at stop | junk failure records | exit code | seconds to stop (to `Outage:`) "
        "| resumed run complete exactly |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in figures["scenarios"]:
        if "error" in row:
            last = row["error"].strip().splitlines()[-1][:200]
            lines.append(f"| `{row['scenario']}` | could not run: {last} | | | | |")
        elif row["scenario"] == "upstream_blip":
            run = row.get("run") or {}
            lines.append(
                f"| `upstream_blip` (down {row.get('upstream_down_s', '?')} s) "
                f"| {row['check']['records']} of {figures['settings']['rows']} (no stop) "
                f"| {row['junk_failure_records']} | {row['exit_code']} "
                f"| no stop; {run.get('outages')} outage, {run.get('outage_wait_s')} s waited "
                f"| {'yes' if row['complete_exactly'] else 'NO'} (in one go, "
                f"{run.get('rollouts_rerun_after_outage')} rollouts re-run) |"
            )
        else:
            lines.append(
                f"| `{row['scenario']}` | {row['rows_recorded_at_stop']} of {figures['settings']['rows']} "
                f"| {row['junk_failure_records']} | {row['exit_code']} | {row['seconds_to_stop']:.1f} "
                f"({_seconds(row.get('seconds_to_outage_notice'))}) "
                f"| {'yes' if row['resumed_complete_exactly'] else 'NO'} |"
            )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def parse_args(argv: list[str]) -> dict[str, Any]:
    settings = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if not sep or key not in DEFAULTS:
            sys.exit(f"unknown argument {arg!r}; known: {', '.join(f'{k}=...' for k in DEFAULTS)}")
        settings[key] = value
    for key in ("rows", "parallel"):
        settings[key] = int(settings[key])
    for key in ("outage_timeout_s", "latency_ms", "blip_s"):
        settings[key] = float(settings[key])
    settings["kill_after"] = int(settings["kill_after"]) if settings["kill_after"] else max(1, settings["rows"] // 4)
    if isinstance(settings["scenarios"], str):
        settings["scenarios"] = [s.strip() for s in settings["scenarios"].split(",") if s.strip()]
    unknown = [s for s in settings["scenarios"] if s not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenarios: {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return settings


def run(settings: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": {"cpus": psutil.cpu_count(), "python": sys.version.split()[0]},
        "settings": {k: v for k, v in settings.items() if k != "output"},
        "scenarios": [],
    }
    for name in settings["scenarios"]:
        print(f"scenario {name} ...", file=sys.stderr, flush=True)
        row = run_scenario(name, settings)
        figures["scenarios"].append(row)
        print(f"  done in {row['scenario_s']} s{' (' + row['error'] + ')' if 'error' in row else ''}", file=sys.stderr)
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    settings = parse_args(list(sys.argv[1:] if argv is None else argv))
    figures = run(settings)
    print(json.dumps(figures, indent=2))
    print()
    print(table(figures))
    if settings["output"]:
        output = Path(settings["output"])
        if not output.is_absolute():
            output = project_root() / output
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
