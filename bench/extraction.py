"""How long the answer extractors take on long and pathological replies (catastrophic backtracking shows here).

    python bench/extraction.py [+repeats=5]

Prints, per reply shape, the median and worst seconds over `repeats` runs of mcqa's letter extractor and
math_verify's candidate-answer extractor. Both must stay well under a second per reply: a verifier that hangs on one
reply stalls every rollout queued behind it. The tests check what these replies extract to, never how fast.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

from nemo_gym.config.overrides import parse_overrides
from resources_servers.math_verify.answers import extract_candidates
from resources_servers.mcqa.extract import extract_answer

PLANETS = {"A": "Venus", "B": "Earth", "C": "Mercury", "D": "Mars"}
REPLIES = {
    "5,000 x 'Answer: ' + C": "Answer: " * 5000 + "C",
    "5,000 unclosed \\boxed{": "\\boxed{" * 5000,
    "5,000 x 'A, B, ' + C": "A, B, " * 5000 + "C",
    "5,000 x '(A) '": "(A) " * 5000,
    "5,000 x option text + 'so C'": "Mercury " * 5000 + "so C",
    "100,000 x 'x'": "x" * 100_000,
}


def timed(extract: Callable[[str], object], reply: str, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        extract(reply)
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times)


def main() -> None:
    settings = parse_overrides(sys.argv[1:])
    repeats = int(settings.get("repeats", 5))
    extractors: dict[str, Callable[[str], object]] = {
        "mcqa extract_answer": lambda reply: extract_answer(reply, PLANETS),
        "math_verify extract_candidates": extract_candidates,
    }
    print(f"{'reply':32} {'extractor':26} {'median s':>9} {'worst s':>9}")
    for label, reply in REPLIES.items():
        for name, extract in extractors.items():
            median, worst = timed(extract, reply, repeats)
            print(f"{label:32} {name:26} {median:9.3f} {worst:9.3f}", flush=True)


if __name__ == "__main__":
    main()
