"""NeMo Gym's `base_resources_server`: the request and response models of a rollout and `SimpleResourcesServer`.

A NeMo Gym environment subclasses `SimpleResourcesServer`, adds one POST route per tool in `setup_webserver`, and
implements `verify` (and optionally `seed_session`, `compute_metrics`, `get_key_metrics`). The routes below are the
ones NeMo Gym's base registers, with the same bodies; `nemo_gym.compat.hosting` serves the app under `ng_run`.
"""

from __future__ import annotations

from abc import abstractmethod
from enum import Enum
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.compat.configs import BaseRunServerInstanceConfig, ModelServerRef
from nemo_gym.compat.hosting import hosted_class
from nemo_gym.compat.judge import judge_failsafe
from nemo_gym.compat.metrics import AggregateMetricsMixin
from nemo_gym.compat.openai_types import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.compat.server_client import BaseServer, SimpleServer
from nemo_gym.servers.base import BaseServer as NativeServer


class ReverifyMode(str, Enum):  # noqa: UP042 - str() as NeMo Gym gives it
    """Whether `/verify` can score a stored trajectory again without the session that produced it."""

    STATELESS = "stateless"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


class BaseResourcesServerConfig(BaseRunServerInstanceConfig):
    REVERIFY_MODE: ClassVar[ReverifyMode] = ReverifyMode.UNKNOWN
    session_ttl_s: float = Field(default=3600.0, gt=0, description="Sessions idle this long are dropped")
    max_sessions: int = Field(default=100_000, gt=0, description="Oldest sessions are dropped beyond this")
    expose_tools_over_mcp: bool = False
    judge_model_server: ModelServerRef | None = Field(
        default=None, description="The model server instance that plays the judge (any: OpenRouter, emulator, local)"
    )
    judge_responses_create_params: NeMoGymResponseCreateParamsNonStreaming | None = None


class BaseRunRequest(BaseModel):
    """A dataset row as the agent sends it: the model's request, plus the row's own fields in subclasses."""

    model_config = ConfigDict(populate_by_name=True)
    responses_create_params: NeMoGymResponseCreateParamsNonStreaming


class BaseVerifyRequest(BaseRunRequest):
    response: NeMoGymResponse


class BaseVerifyResponse(BaseVerifyRequest):
    model_config = ConfigDict(extra="allow")
    reward: float
    mask_sample: bool = False
    failure_kind: str | None = None
    failure_reason: str | None = None


class BaseMultiRewardVerifyResponse(BaseVerifyResponse):
    """Several rewards: `reward` is their scalar aggregate; list each component as a top-level number too, so
    aggregate metrics profile it."""

    reward_components: dict[str, float]


class BaseSeedSessionRequest(BaseModel):
    """The row the rollout starts from; its fields are ignored unless a subclass declares them."""


class BaseSeedSessionResponse(BaseModel):
    pass


class BaseResourcesServer(BaseServer):
    config: BaseResourcesServerConfig


class SimpleResourcesServer(BaseResourcesServer, AggregateMetricsMixin, SimpleServer):
    config: BaseResourcesServerConfig

    def setup_webserver(self) -> FastAPI:
        app = FastAPI()
        self.setup_session_middleware(app)
        overridden = type(self).seed_session is not SimpleResourcesServer.seed_session
        app.post("/seed_session")(self.seed_session if overridden else self._seed_session)
        app.post("/verify")(judge_failsafe(self.verify))  # as NeMo Gym's base does; under ng_run: a failed rollout
        app.post("/aggregate_metrics")(self.aggregate_metrics)
        app.get("/reverify_mode")(self.get_reverify_mode)
        return app

    # `*args, **kwargs` so an environment may narrow the body type (and add `request: Request`) in its override, as
    # NeMo Gym's do, without a type checker calling that an incompatible override. FastAPI reads the override's own
    # signature.
    async def seed_session(self, *args: Any, **kwargs: Any) -> Any:
        return BaseSeedSessionResponse()

    async def _seed_session(self, body: BaseSeedSessionRequest) -> BaseSeedSessionResponse:
        return BaseSeedSessionResponse()

    @abstractmethod
    async def verify(self, *args: Any, **kwargs: Any) -> Any: ...

    async def get_reverify_mode(self) -> ReverifyMode:
        return type(self.config).REVERIFY_MODE

    @classmethod
    def native_server_class(cls) -> type[NativeServer]:
        """The server class that serves this environment under `ng_run` (found by the loader by this name)."""
        return hosted_class(cls)
