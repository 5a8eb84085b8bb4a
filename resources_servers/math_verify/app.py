"""math_verify: math word problems whose final answer is checked for equivalence with the `math-verify` library.

Reward (documented in README.md):
    reward = 1.0 if the reply gives exactly one final answer (all candidates equivalent to each other)
                 and math_verify finds it equivalent to the row's `expected_answer`, else 0.0
Which text is a candidate final answer is decided in `answers.py`; the maths runs in `checker.py`'s worker
processes, because math_verify's timeouts only work in a main thread.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nemo_gym.servers.base import StartupError
from nemo_gym.servers.resources import (
    BaseResourcesServer,
    ResourcesServerConfig,
    Session,
    ToolError,
    VerifyRequest,
    VerifyResponse,
)
from resources_servers.math_verify.answers import extract_candidates, final_assistant_text
from resources_servers.math_verify.checker import CheckerPool


class MathVerifyConfig(ResourcesServerConfig):
    checker_workers: int = Field(default=2, ge=1, le=64, description="Worker processes that run math_verify")
    check_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest one answer check may take; a check "
        "that runs longer scores 0 and its worker process is replaced",
    )


class MathVerifyServer(BaseResourcesServer):
    config_class = MathVerifyConfig
    config: MathVerifyConfig
    row_fields = ("expected_answer",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checker: CheckerPool | None = None

    async def startup(self) -> None:
        await super().startup()
        self.checker = CheckerPool(self.config.checker_workers, self.config.check_timeout_s)
        try:
            await self.checker.start()
        except RuntimeError as exc:  # e.g. math-verify is not installed: one clear message, not a traceback
            raise StartupError(str(exc)) from None

    async def shutdown(self) -> None:
        if self.checker is not None:
            await self.checker.close()
            self.checker = None
        await super().shutdown()

    async def seed_session(self, session: Session) -> None:
        _gold_of(session.row)  # a row that cannot be scored is refused before the model is asked anything

    async def verify(self, session: Session, request: VerifyRequest) -> VerifyResponse:
        gold = _gold_of(session.row or request.row)
        extraction = extract_candidates(final_assistant_text(request.response.get("output") or []))
        verdict: dict[str, Any] = {
            "extracted_answer": None,
            "extracted_value": None,
            "gold": gold,
            "answer_source": extraction.source,
            "candidates": extraction.candidates,
        }
        if extraction.problem:
            return VerifyResponse(reward=0.0, **verdict, reasons=[extraction.problem])
        assert self.checker is not None, "the checker pool starts with the server"
        judgement = await self.checker.judge(gold, extraction.candidates)
        verdict["candidates"] = judgement.distinct
        if judgement.failure:
            return VerifyResponse(
                reward=0.0, **verdict, reasons=[f"the answer could not be checked: {judgement.failure}"]
            )
        if len(judgement.distinct) > 1:
            listed = ", ".join(judgement.distinct)
            return VerifyResponse(
                reward=0.0, **verdict, reasons=[f"several different final answers ({listed}); give exactly one"]
            )
        answer = verdict["extracted_answer"] = judgement.distinct[0]
        verdict["extracted_value"] = judgement.values[0]
        shown = f"{answer} (read as {judgement.values[0]})" if judgement.values[0] not in ("", answer) else answer
        if judgement.equivalent:
            reason = f"final answer {shown} is equivalent to the expected {gold}"
        else:
            reason = f"final answer {shown} is not equivalent to the expected {gold}"
        return VerifyResponse(reward=1.0 if judgement.equivalent else 0.0, **verdict, reasons=[reason])


def _gold_of(row: dict[str, Any]) -> str:
    gold = row.get("expected_answer")
    if isinstance(gold, bool) or not isinstance(gold, str | int | float) or not str(gold).strip():
        raise ToolError(
            "This row has no usable `expected_answer`; every math_verify row needs the final answer as "
            'a non-empty string, e.g. "expected_answer": "3/4".'
        )
    return str(gold).strip()


if __name__ == "__main__":
    from nemo_gym.cli.serve import main

    main()
