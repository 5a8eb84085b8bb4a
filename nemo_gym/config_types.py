"""NeMo Gym's `nemo_gym.config_types`, provided by `nemo_gym.compat` (see docs/porting_nemo_gym_environments.md)."""

from nemo_gym.compat.configs import (
    AGENT_REF_KEY,
    AgentServerRef,
    BaseRunServerConfig,
    BaseRunServerInstanceConfig,
    BaseServerConfig,
    DatasetConfig,
    DatasetType,
    Domain,
    ModelServerRef,
    ResourcesServerRef,
    ServerRef,
    ServerRefTypeAdapter,
    is_server_ref,
)
from nemo_gym.compat.metrics import AggregateMetrics, AggregateMetricsRequest

__all__ = [
    "AGENT_REF_KEY",
    "AgentServerRef",
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseRunServerConfig",
    "BaseRunServerInstanceConfig",
    "BaseServerConfig",
    "DatasetConfig",
    "DatasetType",
    "Domain",
    "ModelServerRef",
    "ResourcesServerRef",
    "ServerRef",
    "ServerRefTypeAdapter",
    "is_server_ref",
]
