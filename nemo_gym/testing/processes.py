"""Run commands such as `ng_run` as real subprocesses in tests: wait for a line, signal, collect output."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class CommandProcess:
    """A command whose merged stdout/stderr is collected line by line while it runs."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None,
                 new_session: bool = True) -> None:
        self.argv = list(argv)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            self.argv, cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=new_session,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout_s: float) -> bool:
        """True once a line contains `text`; False if the process exits first or time runs out."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                if any(text in line for line in self.lines):
                    return True
                if self.process.poll() is not None or time.monotonic() > deadline:
                    return any(text in line for line in self.lines)
                self._changed.wait(0.2)

    def send(self, sig: signal.Signals, *, group: bool = False) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        """The exit status, once the process has ended and all its output has been read."""
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        """Make sure nothing is left running, whatever the test did."""
        if self.process.poll() is None:
            self.send(signal.SIGTERM, group=True)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL, group=True)
                self.process.wait(timeout=5)


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


def collect_rollouts(agent: str, rows: Path, output: Path, *, head_port: int, cwd: Path, extra: Sequence[str] = (),
                     env: Mapping[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """`ng_collect_rollouts` as a subprocess against the ng_run whose head server is on `head_port`."""
    return subprocess.run(
        ["ng_collect_rollouts", f"+agent_name={agent}", f"+input_jsonl_fpath={rows}", f"+output_jsonl_fpath={output}",
         f"+head_server.port={head_port}", *extra],
        cwd=cwd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})})


def collected_records(agent: str, rows: Path, output: Path, *, head_port: int, cwd: Path, parallel: int
                      ) -> list[dict[str, Any]]:
    """Run `collect_rollouts` (failing the test on a non-zero exit, with its stderr) and read the records."""
    collected = collect_rollouts(agent, rows, output, head_port=head_port, cwd=cwd,
                                 extra=[f"+num_samples_in_parallel={parallel}"])
    if collected.returncode != 0:
        raise AssertionError(f"ng_collect_rollouts exited {collected.returncode}: {collected.stderr[-3000:]}")
    return [json.loads(line) for line in output.read_text().splitlines()]
