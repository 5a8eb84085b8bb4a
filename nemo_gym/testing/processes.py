"""Run commands such as `ng_run` as real subprocesses in tests: wait for a line, signal, collect output."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from nemo_gym.protocol.types import JSONObject


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return state != "Z"
    return True


def collect_rollouts(
    agent: str,
    rows: Path,
    output: Path,
    *,
    head_port: int,
    cwd: Path,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`ng_collect_rollouts` as a subprocess against the ng_run whose head server is on `head_port`."""
    return subprocess.run(
        [
            "ng_collect_rollouts",
            f"+agent_name={agent}",
            f"+input_jsonl_fpath={rows}",
            f"+output_jsonl_fpath={output}",
            f"+head_server.port={head_port}",
            *extra,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def collected_records(
    agent: str, rows: Path, output: Path, *, head_port: int, cwd: Path, parallel: int
) -> list[JSONObject]:
    """Run `collect_rollouts` (failing the test on a non-zero exit, with its stderr) and read the records."""
    collected = collect_rollouts(
        agent, rows, output, head_port=head_port, cwd=cwd, extra=[f"+num_samples_in_parallel={parallel}"]
    )
    if collected.returncode != 0:
        raise AssertionError(f"ng_collect_rollouts exited {collected.returncode}: {collected.stderr[-3000:]}")
    return [json.loads(line) for line in output.read_text().splitlines()]


def collector_argv(agent: str, rows: Path, output: Path, head_port: int, *extra: str) -> list[str]:
    """`ng_collect_rollouts` of `agent` over `rows` into `output`, 4 in flight, against the head server on
    `head_port`."""
    return [
        "ng_collect_rollouts",
        f"+agent_name={agent}",
        f"+input_jsonl_fpath={rows}",
        f"+output_jsonl_fpath={output}",
        "+num_samples_in_parallel=4",
        f"+head_server.port={head_port}",
        *extra,
    ]


def wait_for_lines(path: Path, count: int, timeout_s: float = 60) -> None:
    """Until `path` holds `count` whole lines (a collection under way has written that many records)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines")
