"""mental_math: short arithmetic and word problems answered without tools, scored by the number in the final answer.

The model states its answer as `\\boxed{...}` (the last box counts) or, failing that, after "the answer is". The
answer is read as a number (integers, decimals, fractions such as `3/8` or `\\frac{3}{8}`, thousands separators,
a leading currency sign, a trailing `%` or unit word) and compared exactly with the row's `expected_answer`, so
`0.75`, `3/4` and `\\frac{3}{4}` are the same answer. The verifier needs only the trajectory, so a stored rollout can
be scored again (`ReverifyMode.STATELESS`).

`extracted_answer` is the answer in a canonical form (`1,000` -> `1000`, `0.750` -> `0.75`), or the raw text when it
is not a number, or None when there is none: `/aggregate_metrics` counts None as `no_answer` and lets the canonical
answers vote for majority@k. Metrics: pass@k, pass@1[avg-of-k] and majority@k over the repeats of each task, overall
and per `difficulty`.
"""

import re
from fractions import Fraction
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseRunRequest,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ReverifyMode,
    SimpleResourcesServer,
)
from nemo_gym.reward_profile import compute_pass_majority_metrics, compute_subset_metrics, highest_k_metrics

ANSWER_KEY = "extracted_answer"
SUBSET_KEY = "difficulty"
MAX_ANSWER_CHARS = 200

_BOX_OPENERS = ("\\boxed{", "\\fbox{")
_ANSWER_IS = re.compile(r"\banswer\s+is\s*:?\s*(?P<answer>[^\n]*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.;!?](?:\s|$)")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_TEXT_MACRO = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER_OR_FRACTION = re.compile(rf"(?P<number>{_NUMBER}(?:\s*/\s*{_NUMBER})?)")
_UNIT_WORDS = re.compile(r"[A-Za-z][A-Za-z /.\-]*")
_VARIABLE = re.compile(r"^[A-Za-z]\s*=\s*")


class MentalMathResourcesServerConfig(BaseResourcesServerConfig):
    REVERIFY_MODE: ClassVar[ReverifyMode] = ReverifyMode.STATELESS


class MentalMathRunRequest(BaseRunRequest):
    question: str
    expected_answer: str
    difficulty: Literal["easy", "medium", "hard"]

    @field_validator("expected_answer")
    @classmethod
    def _expected_answer_is_a_number(cls, value: str) -> str:
        if parse_number(value) is None:
            raise ValueError(
                f"expected_answer must be a number such as 42, -3.5 or 3/8, got {value!r}; fix the data row"
            )
        return value


class MentalMathVerifyRequest(MentalMathRunRequest, BaseVerifyRequest):
    pass


class MentalMathVerifyResponse(BaseVerifyResponse):
    expected_answer: str
    extracted_answer: str | None


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) whose braces close; None when there is none."""
    starts = [m.end() for opener in _BOX_OPENERS for m in re.finditer(re.escape(opener), text)]
    for start in sorted(starts, reverse=True):
        depth = 1
        for position in range(start, len(text)):
            if text[position] == "{":
                depth += 1
            elif text[position] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:position]
    return None


def extract_final_answer(text: str) -> str | None:
    """The answer as written: the last box, else the rest of the sentence after the last "answer is"."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip() or None
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group("answer")
    end = _SENTENCE_END.search(answer)
    answer = (answer[: end.start()] if end else answer).strip().rstrip(".")
    return answer or None


def parse_number(text: str) -> Fraction | None:
    """The number an answer states, exactly; None when it is not one number (optionally followed by a unit word)."""
    cleaned = text.strip()
    if not cleaned or len(cleaned) > MAX_ANSWER_CHARS:
        return None
    cleaned = _TEXT_MACRO.sub(r" \1", cleaned)
    cleaned = _FRAC.sub(r"(\1)/(\2)", cleaned)
    for noise in ("\\$", "$", "\\%", "%", "\\,", "\\!", "\\left", "\\right", "{", "}", "(", ")", "€", "£"):
        cleaned = cleaned.replace(noise, "")
    cleaned = _THOUSANDS.sub("", cleaned).replace("−", "-").strip().rstrip(".").strip()
    cleaned = _VARIABLE.sub("", cleaned)
    match = _NUMBER_OR_FRACTION.match(cleaned)
    if match is None:
        return None
    rest = cleaned[match.end() :].strip()
    if rest and not _UNIT_WORDS.fullmatch(rest):
        return None
    numerator, _, denominator = match.group("number").partition("/")
    try:
        value = Fraction(numerator.strip())
        return value / Fraction(denominator.strip()) if denominator else value
    except (ValueError, ZeroDivisionError):
        return None


def canonical(value: Fraction) -> str:
    """`1000`, `0.75`, `-2.5`, or `1/3` when the decimal does not terminate: one spelling per number, for votes."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    digits = 0
    while (value * 10**digits).denominator != 1:
        digits += 1
    return f"{float(value):.{digits}f}" if digits <= 15 else f"{value.numerator}/{value.denominator}"


class MentalMathResourcesServer(SimpleResourcesServer):
    config: MentalMathResourcesServerConfig

    async def verify(self, body: MentalMathVerifyRequest) -> MentalMathVerifyResponse:
        written = extract_final_answer(body.response.output_text)
        value = parse_number(written) if written is not None else None
        expected = parse_number(body.expected_answer)
        extracted = canonical(value) if value is not None else written
        reward = 1.0 if value is not None and value == expected else 0.0
        return MentalMathVerifyResponse(**body.model_dump(), extracted_answer=extracted, reward=reward)

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        metrics, _, _, _ = compute_pass_majority_metrics(tasks, answer_key=ANSWER_KEY)
        metrics.update(compute_subset_metrics(tasks, SUBSET_KEY, answer_key=ANSWER_KEY))
        return metrics

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        """Mean reward, pass@k and majority@k at the largest k (no_answer left out: "some repeat gave no answer" is
        not a score), and pass@1[avg-of-k] with its no_answer rate."""
        key_metrics = {name: agent_metrics[name] for name in ("mean/reward",) if name in agent_metrics}
        key_metrics.update(highest_k_metrics(agent_metrics, "pass@1[avg-of-{k}]"))
        key_metrics.update(highest_k_metrics(agent_metrics, "pass@{k}", exclude_names=["no_answer"]))
        key_metrics.update(highest_k_metrics(agent_metrics, "majority@{k}", exclude_names=["no_answer"]))
        return key_metrics


if __name__ == "__main__":
    MentalMathResourcesServer.run_webserver()
