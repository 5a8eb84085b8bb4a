"""NeMo Gym's `openai_utils`: the Responses and Chat Completions types its environments validate against.

Request parameters are pydantic models (the SDK declares them as TypedDicts, which cannot validate a request), so a
row's `responses_create_params` with a misspelt key is refused rather than silently dropped. Response types subclass
the SDK's models, which accept extra fields: our responses carry `nemo_gym` metadata and `usage.cost`, and NeMo Gym
code reads them through these types unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import aiohttp
import orjson
from openai.types.chat import ChatCompletion, ChatCompletionMessage, ChatCompletionMessageToolCall
from openai.types.chat.chat_completion import Choice
from openai.types.responses import (
    Response,
    ResponseOutputRefusal,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_reasoning_item import Summary
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

# ---------------------------------------------------------------------------------------------- input and output items


class NeMoGymSummary(Summary):
    pass


class NeMoGymResponseOutputText(ResponseOutputText):
    annotations: list[Any] = Field(default_factory=list)
    type: Literal["output_text"] = "output_text"


class NeMoGymResponseOutputRefusal(ResponseOutputRefusal):
    type: Literal["refusal"] = "refusal"


NeMoGymContent = NeMoGymResponseOutputText | NeMoGymResponseOutputRefusal


class NeMoGymResponseReasoningItem(BaseModel):
    id: str = ""
    summary: list[NeMoGymSummary] = Field(default_factory=list)
    type: Literal["reasoning"] = "reasoning"
    encrypted_content: str | None = None
    content: list[dict[str, Any]] | None = None


class NeMoGymResponseOutputMessage(BaseModel):
    id: str = ""
    content: list[NeMoGymContent]
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    type: Literal["message"] = "message"


class NeMoGymEasyInputMessage(BaseModel):
    content: str | list[dict[str, Any]]
    role: Literal["user", "assistant", "system", "developer"]
    type: Literal["message"] = "message"


class NeMoGymMessage(BaseModel):
    content: list[dict[str, Any]]
    role: Literal["user", "system", "developer"]
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    type: Literal["message"] = "message"


class NeMoGymFunctionCallOutput(BaseModel):
    call_id: str
    output: str | list[dict[str, Any]]
    type: Literal["function_call_output"] = "function_call_output"
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class NeMoGymResponseFunctionToolCall(BaseModel):
    arguments: str
    call_id: str
    name: str
    type: Literal["function_call"] = "function_call"
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class TokenIDLogProbMixin(BaseModel):
    """The training fields a model call puts on its last output item (see docs/training_data.md)."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]


class NeMoGymResponseOutputMessageForTraining(NeMoGymResponseOutputMessage, TokenIDLogProbMixin):
    pass


class NeMoGymResponseFunctionToolCallForTraining(NeMoGymResponseFunctionToolCall, TokenIDLogProbMixin):
    pass


class NeMoGymResponseReasoningItemForTraining(NeMoGymResponseReasoningItem, TokenIDLogProbMixin):
    pass


class NeMoGymEasyInputMessageForTraining(NeMoGymEasyInputMessage, TokenIDLogProbMixin):
    pass


_TRAINING_FIELDS = frozenset(TokenIDLogProbMixin.model_fields)


def _item_kind(item: Any) -> str:
    """Which item type a dict (or model) is: by `type`, then by role and content shape for messages, and whether it
    carries the training fields."""
    if isinstance(item, BaseModel):
        fields = item.model_dump()  # defaults included: an item built without `type=` still has its type
    elif isinstance(item, dict):
        fields = item
    else:
        return "easy_message"
    kind = str(fields.get("type", "message"))
    training = "_training" if fields.keys() >= _TRAINING_FIELDS else ""
    if kind == "message":
        content: Any = fields.get("content")
        is_output = fields.get("role") == "assistant" and isinstance(content, list) and bool(content)
        if is_output and all(
            isinstance(c, dict | BaseModel)
            and (c.get("type") if isinstance(c, dict) else getattr(c, "type", None)) in ("output_text", "refusal")
            for c in content
        ):
            return "output_message" + training
        if fields.get("role") != "assistant" and isinstance(content, list) and "status" in fields:
            return "message"
        return "easy_message" + training
    if kind in ("function_call", "reasoning"):
        return kind + training
    if kind == "function_call_output":
        return kind
    return "other"


class NeMoGymOtherItem(BaseModel):
    """An item of a type the union does not model (a hosted tool's call, for instance): kept as it came."""

    model_config = ConfigDict(extra="allow")
    type: str


NeMoGymResponseInputItem = Annotated[
    Annotated[NeMoGymEasyInputMessage, Tag("easy_message")]
    | Annotated[NeMoGymEasyInputMessageForTraining, Tag("easy_message_training")]
    | Annotated[NeMoGymMessage, Tag("message")]
    | Annotated[NeMoGymResponseOutputMessage, Tag("output_message")]
    | Annotated[NeMoGymResponseOutputMessageForTraining, Tag("output_message_training")]
    | Annotated[NeMoGymResponseFunctionToolCall, Tag("function_call")]
    | Annotated[NeMoGymResponseFunctionToolCallForTraining, Tag("function_call_training")]
    | Annotated[NeMoGymFunctionCallOutput, Tag("function_call_output")]
    | Annotated[NeMoGymResponseReasoningItem, Tag("reasoning")]
    | Annotated[NeMoGymResponseReasoningItemForTraining, Tag("reasoning_training")]
    | Annotated[NeMoGymOtherItem, Tag("other")],
    Discriminator(_item_kind),
]
NeMoGymResponseInput = list[NeMoGymResponseInputItem]
NeMoGymResponseOutputItem = NeMoGymResponseInputItem


# ---------------------------------------------------------------------------------------------- request and response


class NeMoGymResponseCreateParamsNonStreaming(BaseModel):
    """A Responses `create` body, as a dataset row's `responses_create_params` carries it. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")
    input: str | NeMoGymResponseInput
    background: bool | None = None
    include: list[str] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] | None = None
    model: str | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    store: bool | None = None
    stream: Literal[False] | None = None
    temperature: float | None = None
    text: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None


class NeMoGymResponseInputTokensDetails(InputTokensDetails):
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # newer SDKs require it; endpoints that predate it leave it out


class NeMoGymResponseOutputTokensDetails(OutputTokensDetails):
    reasoning_tokens: int = 0


class NeMoGymResponseUsage(ResponseUsage):
    input_tokens_details: NeMoGymResponseInputTokensDetails = Field(default_factory=NeMoGymResponseInputTokensDetails)
    output_tokens_details: NeMoGymResponseOutputTokensDetails = Field(
        default_factory=NeMoGymResponseOutputTokensDetails
    )


class NeMoGymResponse(Response):
    output: list[NeMoGymResponseOutputItem]  # type: ignore[assignment]
    usage: NeMoGymResponseUsage | None = None

    @property
    def output_text(self) -> str:
        """The text of every assistant output message, concatenated (input-shaped items are skipped)."""
        return "".join(
            part.text
            for item in self.output
            if isinstance(item, NeMoGymResponseOutputMessage)
            for part in item.content
            if isinstance(part, NeMoGymResponseOutputText)
        )


class NeMoGymFunction(BaseModel):
    arguments: str
    name: str


class NeMoGymChatCompletionMessageToolCall(ChatCompletionMessageToolCall):
    pass


class NeMoGymChatCompletionMessage(ChatCompletionMessage):
    tool_calls: list[NeMoGymChatCompletionMessageToolCall] | None = None  # type: ignore[assignment]


class NeMoGymChoice(Choice):
    message: NeMoGymChatCompletionMessage


class NeMoGymChatCompletion(ChatCompletion):
    choices: list[NeMoGymChoice]  # type: ignore[assignment]


class NeMoGymChatCompletionCreateParamsNonStreaming(BaseModel):
    """A Chat Completions `create` body; the optional parameters pass through as given."""

    model_config = ConfigDict(extra="allow")
    messages: list[dict[str, Any]]
    model: str | None = None
    parallel_tool_calls: bool = True
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


# ---------------------------------------------------------------------------------------------- client


RETRY_ERROR_CODES = (429, 500, 502, 503, 504, 520)


class NeMoGymAsyncOpenAI(BaseModel):
    """A small OpenAI-compatible client over aiohttp whose methods return parsed JSON, as NeMo Gym's does. Inside this
    framework prefer calling a model server (`server_client.post(server_name=..., url_path="/v1/responses")`): it adds
    retries with fallbacks, rate limits and the cost meter."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    base_url: str
    api_key: str = Field(repr=False)
    internal: bool = False
    default_headers: dict[str, str] = Field(default_factory=dict)
    max_tries: int = 5

    async def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        headers = {**self.default_headers, "Authorization": f"Bearer {self.api_key}"}
        delay = 0.5
        async with aiohttp.ClientSession() as session:
            for attempt in range(1, self.max_tries + 1):
                async with session.request(
                    method, url, headers=headers, data=orjson.dumps(body) if body is not None else None
                ) as response:
                    raw = await response.read()
                    if response.status in RETRY_ERROR_CODES and attempt < self.max_tries:
                        retry_after = response.headers.get("Retry-After", "")
                        await asyncio.sleep(float(retry_after) if retry_after.replace(".", "", 1).isdigit() else delay)
                        delay *= 2
                        continue
                    if response.status >= 400:
                        raise aiohttp.ClientResponseError(
                            response.request_info,
                            response.history,
                            status=response.status,
                            message=raw[:500].decode("utf-8", "replace"),
                        )
                    return orjson.loads(raw)
        raise AssertionError("unreachable")

    async def create_models(self) -> Any:
        return await self._request("GET", f"{self.base_url}/models")

    async def create_chat_completion(self, **kwargs: Any) -> Any:
        return await self._request("POST", f"{self.base_url}/chat/completions", kwargs)

    async def create_completion(self, **kwargs: Any) -> Any:
        return await self._request("POST", f"{self.base_url}/completions", kwargs)

    async def create_response(self, **kwargs: Any) -> Any:
        return await self._request("POST", f"{self.base_url}/responses", kwargs)

    async def create_tokenize(self, **kwargs: Any) -> Any:
        return await self._request("POST", f"{self.base_url.removesuffix('/v1')}/tokenize", kwargs)
