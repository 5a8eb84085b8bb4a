"""Deciding equivalence with the `math-verify` library, in worker processes that can be killed.

math_verify bounds each `parse`/`verify` call with `signal.alarm`, which only works in a process's main thread;
elsewhere it raises unless the timeout is disabled. A resources server verifies inside an asyncio event loop
(which ng_test and the in-process test clusters run in a thread), and some answers are pathological
(`\\boxed{9^{9^{9^9}}}`), so the maths runs in child processes started with `python -m` on this module: there
math_verify's own per-call timeouts work (main thread), the event loop is never blocked, and a call that outlives
the hard deadline (stuck in C code, out of memory) is ended by killing its process and starting a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

CALL_TIMEOUT_S = 2
"""math_verify's own timeout for each parse/verify call (whole seconds: it uses signal.alarm)."""
WORKER_MEMORY_BYTES = 2 * 1024**3
"""Address-space limit of a worker, so a huge power raises MemoryError in it instead of exhausting the machine."""
READY_LINE = "math_verify worker ready"
STARTUP_TIMEOUT_S = 120.0


@dataclass
class Judgement:
    """How the checker saw the gold and the candidates.

    `distinct` holds one candidate per distinct value (equivalent candidates collapse into the first of them);
    `equivalent` is whether the only distinct candidate matches the gold (False when there are several)."""

    gold_value: str
    distinct: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    equivalent: bool = False
    failure: str | None = None


def _parse(text: str, timeout: int | None) -> list[Any]:
    from math_verify import parse

    # Inline math: math_verify then reads fractions, \frac, \% and \text{...} units as LaTeX (a bare 3/4 too).
    return parse(f"${text}$", parsing_timeout=timeout) if text.strip() else []


def _shown(parsed: list[Any]) -> str:
    """The parsed value as text (sympy's form when there is one, else the string match)."""
    return str(parsed[0]) if parsed else ""


def _same(first: tuple[str, list[Any]], second: tuple[str, list[Any]], timeout: int | None) -> bool:
    from math_verify import verify

    (text_a, parsed_a), (text_b, parsed_b) = first, second
    if not parsed_a or not parsed_b:
        return text_a.strip() == text_b.strip()
    return bool(
        verify(parsed_a, parsed_b, timeout_seconds=timeout) or verify(parsed_b, parsed_a, timeout_seconds=timeout)
    )


def judge(gold: str, candidates: Sequence[str], call_timeout_s: int = CALL_TIMEOUT_S) -> Judgement:
    """Group the candidates by value and check the single group against the gold.

    math_verify's per-call timeouts are used in the main thread only; elsewhere they are off (math_verify cannot
    signal another thread), so off the main thread call this through `CheckerPool`, which enforces a deadline."""
    from math_verify import verify

    timeout = call_timeout_s if threading.current_thread() is threading.main_thread() else None
    gold_parsed = _parse(gold, timeout)
    groups: list[tuple[str, list[Any]]] = []
    for text in candidates:
        parsed = _parse(text, timeout)
        if not any(_same(group, (text, parsed), timeout) for group in groups):
            groups.append((text, parsed))
    judgement = Judgement(
        gold_value=_shown(gold_parsed), distinct=[t for t, _ in groups], values=[_shown(p) for _, p in groups]
    )
    if len(groups) == 1:
        judgement.equivalent = (
            bool(gold_parsed) and bool(groups[0][1]) and verify(gold_parsed, groups[0][1], timeout_seconds=timeout)
        )
    return judgement


# ------------------------------------------------------------------------------------------- worker processes


class _Worker:
    """One `python -m resources_servers.math_verify.checker` child: a JSON job per stdin line, a reply per line."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None

    async def ensure_started(self) -> asyncio.subprocess.Process:
        if self.process is not None and self.process.returncode is None:
            return self.process
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=_import_root(),
            env={**os.environ, "PYTHONPATH": _python_path()},
            start_new_session=True,
        )
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), STARTUP_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if line.decode().strip() != READY_LINE:
            self.kill()
            raise RuntimeError(
                f"the math_verify checker process did not start (it said {line[:200]!r}); is "
                f"math-verify installed for {sys.executable}?"
            )
        return self.process

    async def run(self, job: dict[str, Any], deadline_s: float) -> dict[str, Any]:
        process = await self.ensure_started()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(job).encode() + b"\n")
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), deadline_s)
        if not line:
            raise ConnectionError("the checker process exited while checking")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process = None

    async def close(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the worker exits at end of input
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class CheckerPool:
    """`judge` in `size` worker processes with a hard deadline per check; a worker that misses it is killed."""

    def __init__(self, size: int, deadline_s: float) -> None:
        self.size = size
        self.deadline_s = deadline_s
        self._workers = [_Worker() for _ in range(size)]
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        for worker in self._workers:
            self._idle.put_nowait(worker)

    async def start(self) -> None:
        """Start every worker now, so the first checks don't wait for Python and sympy to load."""
        await asyncio.gather(*(w.ensure_started() for w in self._workers))

    async def judge(self, gold: str, candidates: Sequence[str]) -> Judgement:
        worker = await self._idle.get()
        try:
            await worker.ensure_started()  # outside the deadline: a replaced worker restarts here
            reply = await worker.run({"gold": gold, "candidates": list(candidates)}, self.deadline_s)
            return Judgement(**reply)
        except TimeoutError:
            worker.kill()
            return Judgement(
                gold_value="", distinct=list(candidates), failure=f"checking took longer than {self.deadline_s:g}s"
            )
        except (ConnectionError, ValueError, TypeError) as exc:
            worker.kill()
            return Judgement(gold_value="", distinct=list(candidates), failure=f"the checker failed ({exc})")
        except BaseException:  # e.g. cancelled mid-check: its late reply must not become the next job's answer
            worker.kill()
            raise
        finally:
            self._idle.put_nowait(worker)

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self._workers))


def _import_root() -> str:
    """The folder holding the `resources_servers` package, so `-m resources_servers.math_verify.checker` imports."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python_path() -> str:
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([_import_root(), existing]) if existing else _import_root()


def _limit_memory() -> None:
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_BYTES, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def worker_main() -> None:
    """Serve jobs until stdin closes. Replies go to the real stdout; anything else printed goes to stderr."""
    replies = sys.stdout
    sys.stdout = sys.stderr
    _limit_memory()
    import math_verify  # noqa: F401 - loaded before "ready", so the first check is not slowed by the import

    replies.write(READY_LINE + "\n")
    replies.flush()
    for line in sys.stdin:
        try:
            job = json.loads(line)
            judgement = judge(str(job["gold"]), [str(c) for c in job["candidates"]])
        except MemoryError:
            judgement = Judgement(gold_value="", failure="the checker ran out of memory")
        except Exception as exc:  # noqa: BLE001 - one bad job must not end the worker
            judgement = Judgement(gold_value="", failure=f"the checker failed ({type(exc).__name__}: {exc})")
        replies.write(json.dumps(asdict(judgement)) + "\n")
        replies.flush()


if __name__ == "__main__":
    worker_main()
