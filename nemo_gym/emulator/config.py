"""What an emulator instance pretends to be: keys, credits, a model catalog and how often each model fails.

Everything is a pydantic model with `extra="forbid"`, so a typo in an emulator YAML fails at start-up instead of
silently producing a well-behaved emulator that never injects the fault you asked for.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

FaultKind = Literal[
    "rate_limit",
    "rate_limit_no_retry_after",
    "server_error",
    "bad_gateway",
    "unavailable",
    "timeout",
    "hang",
    "drop_connection",
    "error_in_200",
    "finish_reason_error",
]

# Faults OpenRouter sees before the first byte: it answers them with an HTTP error, or falls through to the next
# model of `models`. The others happen while (or after) a model answers, so they reach the client as they are.
ROUTING_FAULTS: tuple[FaultKind, ...] = (
    "rate_limit",
    "rate_limit_no_retry_after",
    "server_error",
    "bad_gateway",
    "unavailable",
    "timeout",
)
FAULT_KINDS: tuple[FaultKind, ...] = (*ROUTING_FAULTS, "hang", "drop_connection", "error_in_200", "finish_reason_error")


def _price(value: object) -> float:
    """USD per token from a float, int or decimal string ("0.00000015"); negative or non-finite is an error."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"a price must be a number or a decimal string, got {value!r}")
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"a price must be a number or a decimal string, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"a price must be a finite number >= 0, got {value!r}")
    return float(price)


def exact(price: float) -> Decimal:
    """A float price as the decimal it was written as (repr keeps 1.5e-07 exact), for cost arithmetic."""
    return Decimal(repr(price))


def price_string(price: float) -> str:
    """The plain decimal string OpenRouter's /models uses: "0.00000015", "0"."""
    text = format(exact(price).normalize(), "f")
    return "0" if text in ("0", "-0") else text


Price = Annotated[float, BeforeValidator(_price)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class FaultRates(BaseModel):
    """Per-request probabilities of each fault, drawn independently for every routing attempt."""

    model_config = ConfigDict(extra="forbid")

    rate_limit: Probability = 0.0
    rate_limit_no_retry_after: Probability = 0.0
    server_error: Probability = 0.0
    bad_gateway: Probability = 0.0
    unavailable: Probability = 0.0
    timeout: Probability = 0.0
    hang: Probability = 0.0
    drop_connection: Probability = 0.0
    error_in_200: Probability = 0.0
    finish_reason_error: Probability = 0.0
    retry_after_s: float = Field(1.0, ge=0.0)
    hang_s: float = Field(30.0, ge=0.0)

    @model_validator(mode="after")
    def _at_most_one(self) -> FaultRates:
        total = sum(getattr(self, kind) for kind in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"fault probabilities add up to {total:g}; at most one fault happens per request, "
                "so their sum must be <= 1"
            )
        return self


class EmulatedModel(BaseModel):
    """One catalog entry: served by a single provider endpoint."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[\w.-]+/[\w.:-]+$")
    name: str
    provider_name: str
    context_length: int = Field(128_000, gt=0)
    max_completion_tokens: int | None = 16_384
    prompt_price: Price = 0.0
    completion_price: Price = 0.0
    supports_tools: bool = True
    supports_logprobs: bool = False
    """Chat Completions `logprobs` / `top_logprobs` reach this model's provider; without it they are dropped."""
    quality: Probability = 1.0
    faults: FaultRates | None = None
    created: int = 1_700_000_000
    description: str = ""

    @property
    def provider_slug(self) -> str:
        """The slug `provider.only/ignore/order` name this endpoint by ("Google AI Studio" -> google-ai-studio)."""
        return "-".join(self.provider_name.lower().split())


def default_models() -> list[EmulatedModel]:
    """A small realistic catalog (prices in USD per token, as OpenRouter lists them)."""
    return [
        EmulatedModel(
            id="openai/gpt-4o-mini",
            name="OpenAI: GPT-4o-mini",
            provider_name="OpenAI",
            context_length=128_000,
            prompt_price="0.00000015",
            completion_price="0.0000006",
            supports_logprobs=True,
            created=1721260800,
        ),
        EmulatedModel(
            id="openai/gpt-4-turbo",
            name="OpenAI: GPT-4 Turbo",
            provider_name="OpenAI",
            context_length=128_000,
            max_completion_tokens=4096,
            prompt_price="0.00001",
            completion_price="0.00003",
            supports_logprobs=True,
            created=1712620800,
        ),
        EmulatedModel(
            id="anthropic/claude-3.5-sonnet",
            name="Anthropic: Claude 3.5 Sonnet",
            provider_name="Anthropic",
            context_length=200_000,
            max_completion_tokens=8192,
            prompt_price="0.000003",
            completion_price="0.000015",
            created=1729555200,
        ),
        EmulatedModel(
            id="meta-llama/llama-3.1-8b-instruct",
            name="Meta: Llama 3.1 8B Instruct",
            provider_name="DeepInfra",
            context_length=131_072,
            prompt_price="0.00000002",
            completion_price="0.00000005",
            quality=0.85,
            supports_logprobs=True,
            created=1721692800,
        ),
        EmulatedModel(
            id="meta-llama/llama-3.1-8b-instruct:free",
            name="Meta: Llama 3.1 8B Instruct (free)",
            provider_name="Meta",
            context_length=131_072,
            max_completion_tokens=4096,
            prompt_price="0",
            completion_price="0",
            quality=0.8,
            created=1721692800,
        ),
        EmulatedModel(
            id="mistralai/mixtral-8x7b-instruct",
            name="Mistral: Mixtral 8x7B Instruct",
            provider_name="Mistral",
            context_length=32_768,
            prompt_price="0.00000054",
            completion_price="0.00000054",
            supports_tools=False,
            created=1702166400,
        ),
        EmulatedModel(
            id="google/gemini-pro",
            name="Google: Gemini Pro 1.0",
            provider_name="Google AI Studio",
            context_length=32_760,
            max_completion_tokens=8192,
            prompt_price="0.000000125",
            completion_price="0.000000375",
            quality=0.9,
            created=1702425600,
        ),
    ]


class EmulatorConfig(BaseModel):
    """An emulator's whole behaviour; the YAML file of `ng_openrouter_emulator +config_path=...` holds these keys."""

    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(default_factory=list)
    credits_usd: float | None = Field(None, ge=0.0)
    seed: int = 0
    models: list[EmulatedModel] = Field(default_factory=default_models)
    latency_ms: float = Field(0.0, ge=0.0)
    latency_jitter_ms: float = Field(0.0, ge=0.0)
    default_faults: FaultRates = Field(default_factory=FaultRates)
    stream_usage_chunk: Literal["empty_choices", "dummy_choice"] = "empty_choices"
    answer_keys: list[Path] = Field(default_factory=list)
    """JSONL datasets whose rows' `answer_field` the scripted model knows: asked a row's question without tools, it
    answers `The answer is \\boxed{<answer>}.` with probability `quality`, else a wrong answer, so text-only
    environments (math, multiple choice) get rewards that vary by model."""
    answer_field: str = "expected_answer"
    scripted_replies: list[Path] = Field(default_factory=list)
    """JSONL files of rules `{"when_all": [substrings], "reply": text, "models"?: [ids]}`: a request whose text
    contains all of a rule's substrings gets `reply` (first matching rule wins, before any tool calling), so an
    LLM judge can be played offline with known verdicts."""
    report_cost: bool = True
    """Answers carry `usage.cost` as OpenRouter's do; false answers with token counts only, like most other
    OpenAI-compatible servers, so cost estimation from catalog prices can be tested."""
    echo_key_in_errors: bool = False
    """Error messages quote the request's Authorization header, as careless providers do: proves that clients
    redact a key that comes back to them."""

    @model_validator(mode="after")
    def _unique_ids(self) -> EmulatorConfig:
        seen: set[str] = set()
        for model in self.models:
            if model.id in seen:
                raise ValueError(f"model id {model.id!r} appears twice in models")
            seen.add(model.id)
        return self

    def faults_of(self, model: EmulatedModel) -> FaultRates:
        return model.faults if model.faults is not None else self.default_faults
