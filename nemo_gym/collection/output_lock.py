"""One writer per output: `<output>.lock` next to the (resolved) output, flock(2)-locked for the whole run.

Why an flock held on a lock file, rather than a file created with O_CREAT|O_EXCL: the kernel drops an flock when its
holder dies however it dies (kill -9, the OOM killer, a crash), so a lock never goes stale, and two collectors that
find the same dead owner cannot both take over, which breaking an O_EXCL file by a pid check cannot promise; nor
can a reused pid keep a dead owner's lock alive. Unlike a POSIX record lock (fcntl/lockf), an flock belongs to the
open file, not the process: nothing else in the process can drop it by closing another descriptor of the file, and
a second acquisition in the same process is refused too. The file's content (pid, start time, command) is for
people: it names the owner in a refusal, and content left without a lock is an owner that died holding it, said in
one line when the next run takes over. The lock file is unlinked on release, while still locked; whoever locked the
unlinked file checks that the path still names what it locked, and tries again if not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

import orjson

from nemo_gym.collection.inputs import InputError

LOCK_SUFFIX = ".lock"
OWNER_WAIT_S = 1.0
"""How long a refusal waits for a lock's new owner to write its name (it locks first, then writes)."""
UNSUPPORTED = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})


class OutputLocked(Exception):
    """A live process holds the output's lock; the message names it and says what to do."""


def lock_path(output: Path) -> Path:
    """`<output>.lock` beside the file the output resolves to, so every spelling of it (relative, absolute, through
    a symlink) meets the same lock."""
    return Path(os.path.realpath(output) + LOCK_SUFFIX)


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat); with the pid it names one
    process even after the pid is reused. None without /proc or such a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # the name (field 2) may hold spaces and parentheses
    try:
        return int(fields[19]) if fields[0] != b"Z" else None
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or held) an output's lock."""

    pid: int
    host: str
    started_at: str
    start_ticks: int | None
    command: str

    @classmethod
    def current(cls, command: str) -> LockOwner:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=datetime.now().astimezone().isoformat(timespec="seconds"),
            start_ticks=process_start_ticks(os.getpid()),
            command=command,
        )

    @classmethod
    def parse(cls, data: bytes) -> LockOwner | None:
        try:
            fields = orjson.loads(data)
            if not isinstance(fields, dict):
                return None
            return cls(
                pid=int(fields["pid"]),
                host=str(fields.get("host", "")),
                started_at=str(fields.get("started_at", "an unknown time")),
                start_ticks=None if fields.get("start_ticks") is None else int(fields["start_ticks"]),
                command=str(fields.get("command", "")),
            )
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
            return None

    def running(self) -> bool | None:
        """Whether this very process still runs (not another one given the same pid since); None when it cannot be
        told from here (another host)."""
        if self.host and self.host != socket.gethostname():
            return None
        ticks = process_start_ticks(self.pid)
        if ticks is None:
            return False
        return self.start_ticks is None or ticks == self.start_ticks

    def describe(self) -> str:
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        command = f", running `{self.command}`" if self.command else ""
        return f"pid {self.pid}{where}, started {self.started_at}{command}"


class OutputLock:
    """The held lock of one output. `release` (or leaving its `with`) unlinks the lock file, then unlocks it."""

    def __init__(self, output: Path, path: Path, fd: int | None, owner: LockOwner, previous: LockOwner | None) -> None:
        self.output = output
        self.path = path
        self._fd = fd
        self.owner = owner
        self.previous = previous
        """The owner named by a lock file nobody held: a run that died holding it."""
        self.unprotected = False

    @classmethod
    def acquire(cls, output: Path, *, command: str) -> OutputLock:
        """Lock `output` for this process, or raise OutputLocked at once (never waits) naming who holds it."""
        path = lock_path(output)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise InputError(
                    f"Cannot create the lock file {path} for +output_jsonl_fpath={output}: {exc.strerror or exc}. "
                    "Choose an output in a writable directory."
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner_when_named(fd)
                os.close(fd)
                raise OutputLocked(refusal(output, path, owner)) from None
            except OSError as exc:
                if exc.errno not in UNSUPPORTED:
                    os.close(fd)
                    raise
                return cls._unenforced(output, path, fd)
            if _still_at(path, fd):
                break
            os.close(fd)  # a releasing owner unlinked the file we locked: lock the one at the path now
        lock = cls(output, path, fd, LockOwner.current(command), LockOwner.parse(_read(fd)))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, orjson.dumps(asdict(lock.owner)) + b"\n", 0)
        except BaseException:  # a full disk, Ctrl-C: never keep a lock nobody will release
            lock.release()
            raise
        return lock

    @classmethod
    def _unenforced(cls, output: Path, path: Path, fd: int) -> OutputLock:
        """A filesystem without flock (rare: NFS without its lock daemon): run unprotected, and say so."""
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()  # a file nobody can lock would only mislead
        lock = cls(output, path, None, LockOwner.current(""), None)
        lock.unprotected = True
        return lock

    def covers(self, output: Path) -> bool:
        return lock_path(output) == self.path

    def note(self) -> str | None:
        """One line to print: the lock was taken over from a run that died holding it, or could not be taken."""
        if self.unprotected:
            return (
                f"warning: cannot lock {self.path} (this filesystem does not support file locks); make sure no "
                f"other collector writes {self.output} at the same time."
            )
        previous = self.previous
        if previous is None:
            return None
        fate = "is no longer running" if previous.running() is False else "no longer holds the lock"
        return (
            f"Took over the lock of {self.output}: the collector that held it ({previous.describe()}) {fate}; it "
            "ended without releasing it (killed?)."
        )

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _still_at(self.path, fd):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def refusal(output: Path, path: Path, owner: LockOwner | None) -> str:
    """Why this run cannot write `output`, who does, and the ways out."""
    if owner is None:
        return (
            f"{output} is locked by another collector that is just starting ({path} does not name it yet). Only "
            "one process may write an output: two would record every rollout twice. Wait for it to end, or stop it "
            f"(`fuser {path}` shows its pid), then run this again."
        )
    if owner.running() is False:
        return (
            f"{output} is locked ({path}) by a process that outlived the collector which took the lock, "
            f"{owner.describe()}; that collector is no longer running. Find the holder with `fuser {path}`, stop "
            "it, then run this again."
        )
    return (
        f"{output} is being written by another collector: {owner.describe()}. Only one process may write an "
        "output: two would record every rollout twice. Wait for it to end (then this same command resumes whatever "
        f"is left), or stop it first (Ctrl-C in its terminal, or `kill {owner.pid}`: it keeps every finished "
        f"rollout), then run this again. Lock file: {path}."
    )


def refuse_input_as_output(input_path: Path, output: Path) -> None:
    """Rollouts appended to the dataset they come from would corrupt it: refuse, whatever the spelling."""
    same = os.path.realpath(input_path) == os.path.realpath(output)
    if not same:
        with contextlib.suppress(OSError):
            same = os.path.samefile(input_path, output)  # hard links too
    if same:
        raise InputError(
            f"+output_jsonl_fpath={output} is the input file +input_jsonl_fpath={input_path}: rollouts would be "
            "appended to the dataset itself. Write them to another file, e.g. "
            f"+output_jsonl_fpath={Path(input_path).with_name(Path(input_path).stem + '_rollouts.jsonl')}."
        )


def _read(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _owner_when_named(fd: int) -> LockOwner | None:
    """The holder named in the file; a holder that has just locked it may not have written its name yet (the file
    is empty, or still names the dead owner it took over from), so wait a moment for it."""
    deadline = time.monotonic() + OWNER_WAIT_S
    while True:
        owner = LockOwner.parse(_read(fd))
        if (owner is not None and owner.running() is not False) or time.monotonic() > deadline:
            return owner
        time.sleep(0.05)


def _still_at(path: Path, fd: int) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
