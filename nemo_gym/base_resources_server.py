"""NeMo Gym's `nemo_gym.base_resources_server`, provided by `nemo_gym.compat` (see the porting guide in docs/)."""

from nemo_gym.compat.metrics import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.compat.openai_types import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.compat.resources import (
    BaseMultiRewardVerifyResponse,
    BaseResourcesServer,
    BaseResourcesServerConfig,
    BaseRunRequest,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ReverifyMode,
    SimpleResourcesServer,
)
from nemo_gym.compat.server_client import SESSION_ID_KEY, BaseServer, SimpleServer

__all__ = [
    "SESSION_ID_KEY",
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseMultiRewardVerifyResponse",
    "BaseResourcesServer",
    "BaseResourcesServerConfig",
    "BaseRunRequest",
    "BaseSeedSessionRequest",
    "BaseSeedSessionResponse",
    "BaseServer",
    "BaseVerifyRequest",
    "BaseVerifyResponse",
    "NeMoGymResponse",
    "NeMoGymResponseCreateParamsNonStreaming",
    "ReverifyMode",
    "SimpleResourcesServer",
    "SimpleServer",
]
