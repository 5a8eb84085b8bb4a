"""reasoning_gym: any task of the reasoning-gym library (procedural generators with their own scorers), offline.

Rows come from `ng_prepare_reasoning_gym` (prepare.py). The model answers in text; `/verify` finds the answer
(answers.py) and scores it with the task's own library scorer (scoring.py).

Reward (documented in README.md):
    reward = min over the distinct answers the reply gives (in the first format present) of the library score,
             clipped to [0, 1]; 0 when no answer is found
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field

from nemo_gym.protocol.conversion import content_text
from nemo_gym.servers.resources import (
    BaseResourcesServer,
    ResourcesServerConfig,
    Session,
    ToolError,
    VerifyRequest,
    VerifyResponse,
    final_assistant_text,
)
from resources_servers.reasoning_gym.answers import extract
from resources_servers.reasoning_gym.scoring import (
    RowTask,
    Verdict,
    library_entry,
    no_answer_verdict,
    row_task,
    score_extraction,
)
from resources_servers.reasoning_gym.tasks import TaskSelection, dataset_for

# Library scorers are plain Python (some parse with sympy): they run off the event loop, with a time limit.
SCORING_THREADS = 4
_scoring_pool = ThreadPoolExecutor(max_workers=SCORING_THREADS, thread_name_prefix="reasoning-gym-score")


class ReasoningGymConfig(ResourcesServerConfig, TaskSelection):
    """The server block. `task`/`tasks`, `size`, `seed` and `task_config` are what `ng_prepare_reasoning_gym` generates
    by default; the server checks them at start-up and builds those datasets ahead of the first /verify. Rows carry
    their own task and settings, so the server scores rows of any task."""

    score_timeout_s: float = Field(default=10.0, gt=0, description="A library scorer running longer scores 0")


class ReasoningGymServer(BaseResourcesServer):
    config_class = ReasoningGymConfig
    config: ReasoningGymConfig
    row_fields = ("expected_answer", "reasoning_gym")

    async def seed_session(self, session: Session) -> None:
        """Reject a row that cannot be scored now, before any model call is paid for."""
        spec = _checked_row(session.row)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(_scoring_pool, dataset_for, spec.task, spec.config, spec.seed, spec.size)
        except ValueError as exc:
            raise ToolError(f"This row's reasoning_gym settings are invalid: {exc}") from None

    async def verify(self, session: Session, request: VerifyRequest) -> VerifyResponse:
        row = session.row or request.row
        spec = _checked_row(row)
        expected = str(row["expected_answer"])
        text = final_assistant_text(request.response.get("output") or []) or ""
        extraction = extract(text)
        source = None
        if extraction.candidates:
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(_scoring_pool, _score, spec, _question(row), expected, extraction)
            try:
                verdict, source = await asyncio.wait_for(job, self.config.score_timeout_s)
            except TimeoutError:
                verdict = Verdict(
                    0.0, reasons=[f"the {spec.task} scorer took longer than {self.config.score_timeout_s:g}s; scored 0"]
                )
            except ValueError as exc:
                raise ToolError(f"This row's reasoning_gym settings are invalid: {exc}") from None
        else:
            verdict = no_answer_verdict()
        if not text.strip():
            verdict.reasons.insert(0, "the trajectory does not end with a non-empty assistant message")
        return VerifyResponse(
            reward=round(verdict.reward, 6),
            task=spec.task,
            extracted_answer=extraction.answer,
            expected_answer=expected,
            answer_format=extraction.format,
            candidates=[{"answer": a, "score": verdict.scores.get(a)} for a in extraction.candidates],
            scored_with=source,
            reasons=verdict.reasons,
        )


def _checked_row(row: dict[str, Any]) -> RowTask:
    if row.get("expected_answer") is None:
        raise ToolError(
            "This row has no `expected_answer`; every reasoning_gym row needs it (the task's answer as a "
            "string; ng_prepare_reasoning_gym writes it)."
        )
    try:
        return row_task(row)
    except ValueError as exc:
        raise ToolError(str(exc)) from None


def _score(spec: RowTask, question: str, expected: str, extraction: Any) -> tuple[Verdict, str]:
    dataset = dataset_for(spec.task, spec.config, spec.seed, spec.size)
    entry, source = library_entry(spec, question, expected)
    return score_extraction(dataset.score_answer, extraction, entry, spec.task), source


def _question(row: dict[str, Any]) -> str:
    """The last user message of the row's input: the library entry's question."""
    params = row.get("responses_create_params") or {}
    items = params.get("input") if isinstance(params, dict) else None
    if isinstance(items, str):
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            return content_text(item.get("content"))
    return ""


if __name__ == "__main__":
    from nemo_gym.cli.serve import main

    main()
