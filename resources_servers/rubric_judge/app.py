"""rubric_judge: short written explanations graded criterion by criterion by an LLM judge.

Each row has a question, a reference answer and a rubric (criteria with weights). `/verify` fills the judge prompt
(`judge_prompt_config`, a NeMo Gym prompt config with `system`/`user` templates) with the row and the model's answer,
sends it to the judge model server (`judge_model_server`, with `judge_responses_create_params`), and reads the
verdict, a JSON object `{"criteria": {"c1": true, "c2": false, ...}}` naming every criterion id. The reward is the
weight of the criteria met over the total weight.

A judge that cannot be reached, answers an error, or answers something that is not such a verdict raises
`JudgeError` (its message quotes the judge's text): the rollout is recorded as a judge failure, never scored 0,
because a 0 would read as a wrong answer in training data. An empty answer scores 0 without asking the judge.
"""

import json
from typing import Any, ClassVar

from pydantic import BaseModel, Field, field_validator

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseRunRequest,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ReverifyMode,
    SimpleResourcesServer,
)
from nemo_gym.config_types import ModelServerRef
from nemo_gym.judge import JudgeError, call_judge
from nemo_gym.openai_utils import NeMoGymEasyInputMessage, NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.prompt import fill_prompt, load_prompt_config

MAX_QUOTED_CHARS = 300
VERDICT_KEY = "criteria"


class RubricJudgeResourcesServerConfig(BaseResourcesServerConfig):
    REVERIFY_MODE: ClassVar[ReverifyMode] = ReverifyMode.STATELESS
    judge_model_server: ModelServerRef
    judge_responses_create_params: NeMoGymResponseCreateParamsNonStreaming
    judge_prompt_config: str = "resources_servers/rubric_judge/prompts/judge.yaml"


class RubricCriterion(BaseModel):
    id: str = Field(min_length=1)
    criterion: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)


class RubricJudgeRunRequest(BaseRunRequest):
    task_id: str
    question: str
    reference_answer: str
    rubric: list[RubricCriterion] = Field(min_length=1)

    @field_validator("rubric")
    @classmethod
    def _criterion_ids_are_unique(cls, rubric: list[RubricCriterion]) -> list[RubricCriterion]:
        ids = [criterion.id for criterion in rubric]
        repeated = sorted({criterion_id for criterion_id in ids if ids.count(criterion_id) > 1})
        if repeated:
            raise ValueError(f"rubric criterion ids must be unique; {repeated} appear more than once: rename them")
        return rubric


class RubricJudgeVerifyRequest(RubricJudgeRunRequest, BaseVerifyRequest):
    pass


class JudgeEvaluation(BaseModel):
    responses_create_params: NeMoGymResponseCreateParamsNonStreaming
    response: NeMoGymResponse


class RubricJudgeVerifyResponse(BaseVerifyResponse):
    criteria_met: list[str]
    criteria_missed: list[str]
    judge_evaluations: list[JudgeEvaluation]


def render_rubric(rubric: list[RubricCriterion]) -> str:
    return "\n".join(f"- {criterion.id} ({criterion.weight:g}): {criterion.criterion}" for criterion in rubric)


def verdict_template(rubric: list[RubricCriterion]) -> str:
    return "{" + ", ".join(f'"{criterion.id}": true or false' for criterion in rubric) + "}"


def quoted(text: str) -> str:
    """The judge's text for an error message, cut to MAX_QUOTED_CHARS."""
    shown = text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + "..."
    return json.dumps(shown, ensure_ascii=False)


def find_verdict(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` that has a `criteria` key (prose or a code fence around it is fine)."""
    decoder = json.JSONDecoder()
    position = text.find("{")
    while position != -1:
        try:
            value, _ = decoder.raw_decode(text, position)
        except ValueError:
            value = None
        if isinstance(value, dict) and VERDICT_KEY in value:
            return value
        position = text.find("{", position + 1)
    return None


def read_verdict(text: str, rubric: list[RubricCriterion], task_id: str) -> dict[str, bool]:
    """criterion id -> met, for every criterion of the rubric; JudgeError quoting the judge when the text is not a
    verdict on all of them. Ids the rubric does not have are ignored."""
    expected = [criterion.id for criterion in rubric]
    shape = '{"criteria": {' + ", ".join(f'"{criterion_id}": true|false' for criterion_id in expected) + "}}"
    verdict = find_verdict(text)
    if verdict is None:
        problem = f"no JSON object with a {VERDICT_KEY!r} key"
    elif not isinstance(verdict[VERDICT_KEY], dict):
        problem = f"{VERDICT_KEY!r} is {type(verdict[VERDICT_KEY]).__name__}, not an object of criterion ids"
    else:
        criteria = verdict[VERDICT_KEY]
        missing = [criterion_id for criterion_id in expected if criterion_id not in criteria]
        not_bool = [criterion_id for criterion_id in expected if criterion_id in criteria]
        not_bool = [criterion_id for criterion_id in not_bool if not isinstance(criteria[criterion_id], bool)]
        if not missing and not not_bool:
            return {criterion_id: criteria[criterion_id] for criterion_id in expected}
        problem = "; ".join(
            part
            for part in (
                f"criteria {missing} missing" if missing else "",
                f"criteria {not_bool} not true/false" if not_bool else "",
            )
            if part
        )
    raise JudgeError(
        f"rubric_judge task {task_id}: the judge's reply is not a verdict ({problem}); expected {shape}. "
        f"The judge answered: {quoted(text)}"
    )


class RubricJudgeResourcesServer(SimpleResourcesServer):
    config: RubricJudgeResourcesServerConfig

    async def verify(self, body: RubricJudgeVerifyRequest) -> RubricJudgeVerifyResponse:
        answer = body.response.output_text.strip()
        if not answer:
            return RubricJudgeVerifyResponse(
                **body.model_dump(),
                reward=0.0,
                criteria_met=[],
                criteria_missed=[criterion.id for criterion in body.rubric],
                judge_evaluations=[],
            )
        params = self.judge_request(body, answer)
        judge_response = await call_judge(
            self.server_client,
            server_name=self.config.judge_model_server.name,
            url_path="/v1/responses",
            json=params,
            response_model=NeMoGymResponse,
        )
        verdict = read_verdict(judge_response.output_text.strip(), body.rubric, body.task_id)
        total = sum(criterion.weight for criterion in body.rubric)
        met = sum(criterion.weight for criterion in body.rubric if verdict[criterion.id])
        return RubricJudgeVerifyResponse(
            **body.model_dump(),
            reward=met / total,
            criteria_met=[criterion_id for criterion_id, ok in verdict.items() if ok],
            criteria_missed=[criterion_id for criterion_id, ok in verdict.items() if not ok],
            judge_evaluations=[JudgeEvaluation(responses_create_params=params, response=judge_response)],
        )

    def judge_request(self, body: RubricJudgeVerifyRequest, answer: str) -> NeMoGymResponseCreateParamsNonStreaming:
        """`judge_responses_create_params` with the filled prompt as its input."""
        prompt_config = load_prompt_config(self.config.judge_prompt_config)
        fields = {
            "task_id": body.task_id,
            "question": body.question,
            "reference_answer": body.reference_answer,
            "rubric": render_rubric(body.rubric),
            "criterion_ids": ", ".join(criterion.id for criterion in body.rubric),
            "verdict_template": verdict_template(body.rubric),
            "candidate_answer": answer,
        }
        params = self.config.judge_responses_create_params.model_copy(deep=True)
        params.input = [
            NeMoGymEasyInputMessage(role=message["role"], content=message["content"], type="message")
            for message in fill_prompt(prompt_config, fields)
        ]
        return params


if __name__ == "__main__":
    RubricJudgeResourcesServer.run_webserver()
