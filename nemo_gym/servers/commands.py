"""A command run as a child process (such as `ng_run` under `ng_demo`), its output collected line by line so a caller
can wait for a line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class CommandProcess:
    """A command whose merged stdout/stderr is collected line by line while it runs."""

    def __init__(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, new_session: bool = True
    ) -> None:
        self.argv = list(argv)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
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
