"""Child processes that never outlive their parent: free ports, spawning, graceful stop.

On Linux each child asks the kernel (PR_SET_PDEATHSIG) for SIGTERM when its parent dies, so even a SIGKILLed
`ng_run` leaves no orphan servers holding ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1", *, exclude: Collection[int] = ()) -> int:
    """A port that is free right now on `host` (the kernel picks it), other than those in `exclude` (ports handed
    out already but not bound yet: the kernel may offer a released port again)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    capture: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group (so a terminal's Ctrl-C reaches it only through us) that dies
    with its parent; stdout and stderr are merged into one pipe when `capture`."""
    return subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def stop(processes: Sequence[subprocess.Popen[bytes]], *, grace_s: float = 8.0) -> None:
    """SIGTERM every live child's process group, wait up to `grace_s`, then SIGKILL what is left."""
    live = [p for p in processes if p.poll() is None]
    for proc in live:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in live:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
