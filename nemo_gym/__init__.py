"""NeMo Gym for OpenRouter: RL environments and rollout collection through OpenRouter or any OpenAI-compatible
endpoint.

The names below are the public API; each is imported on first use, so `import nemo_gym` stays cheap for the server
processes that need only a part of it. The layout, from the bottom up: `config` (load, merge, interpolate, redact),
`protocol` (conversion and the record types), `http` (every call we make), `upstream` (calling a model endpoint),
`servers` (the bases, serving, launch), `collection` (the engine), `training`, `compat` (NeMo Gym's environment API,
re-exported under its module names), `compare`, `emulator`, `viewer`, and `cli`, a thin shell over all of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nemo_gym.collection.advantages import RowGroup, group_advantages, group_records
    from nemo_gym.collection.collector import CollectionSettings, Collector, RolloutSettings
    from nemo_gym.collection.inputs import InputError, read_rows
    from nemo_gym.collection.run import Interrupted, RunStopped, collect
    from nemo_gym.collection.stream import BudgetReached, RolloutClient, launch_servers, rollouts
    from nemo_gym.config.errors import ConfigError
    from nemo_gym.config.loading import load_global_config
    from nemo_gym.config.secrets import Redactor
    from nemo_gym.config.types import GlobalConfig
    from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
    from nemo_gym.http.server_client import ServerCallError, ServerClient
    from nemo_gym.protocol.types import (
        CollectionSummary,
        JSONObject,
        MetricsSummary,
        ModelCallMetadata,
        RolloutMetadata,
        RolloutRecord,
        Usage,
    )
    from nemo_gym.servers.agent import BaseAgentConfig, BaseAgentServer
    from nemo_gym.servers.base import BaseServer, BaseServerConfig, ServerRef, StartupError
    from nemo_gym.servers.model import BaseModelServer, InvalidRequest
    from nemo_gym.servers.resources import (
        BaseResourcesServer,
        ResourcesServerConfig,
        Session,
        ToolError,
        VerifyRequest,
        VerifyResponse,
    )
    from nemo_gym.servers.serving import serve_in_thread

_EXPORTS: dict[str, str] = {
    # configuration
    "ConfigError": "nemo_gym.config.errors",
    "GlobalConfig": "nemo_gym.config.types",
    "load_global_config": "nemo_gym.config.loading",
    "Redactor": "nemo_gym.config.secrets",
    # servers: subclass one of the bases in a server folder's app.py
    "BaseServer": "nemo_gym.servers.base",
    "BaseServerConfig": "nemo_gym.servers.base",
    "ServerRef": "nemo_gym.servers.base",
    "StartupError": "nemo_gym.servers.base",
    "BaseResourcesServer": "nemo_gym.servers.resources",
    "ResourcesServerConfig": "nemo_gym.servers.resources",
    "Session": "nemo_gym.servers.resources",
    "ToolError": "nemo_gym.servers.resources",
    "VerifyRequest": "nemo_gym.servers.resources",
    "VerifyResponse": "nemo_gym.servers.resources",
    "BaseAgentServer": "nemo_gym.servers.agent",
    "BaseAgentConfig": "nemo_gym.servers.agent",
    "BaseModelServer": "nemo_gym.servers.model",
    "InvalidRequest": "nemo_gym.servers.model",
    "serve_in_thread": "nemo_gym.servers.serving",
    "ServerClient": "nemo_gym.http.server_client",
    "ServerCallError": "nemo_gym.http.server_client",
    # collection
    "collect": "nemo_gym.collection.run",
    "RunStopped": "nemo_gym.collection.run",
    "Interrupted": "nemo_gym.collection.run",
    "CollectionSettings": "nemo_gym.collection.collector",
    "Collector": "nemo_gym.collection.collector",
    "read_rows": "nemo_gym.collection.inputs",
    "InputError": "nemo_gym.collection.inputs",
    # training: rollouts of each step's batch as records, and group advantages
    "RolloutClient": "nemo_gym.collection.stream",
    "RolloutSettings": "nemo_gym.collection.collector",
    "rollouts": "nemo_gym.collection.stream",
    "launch_servers": "nemo_gym.collection.stream",
    "BudgetReached": "nemo_gym.collection.stream",
    "group_advantages": "nemo_gym.collection.advantages",
    "group_records": "nemo_gym.collection.advantages",
    "RowGroup": "nemo_gym.collection.advantages",
    # what records and metrics hold
    "RolloutRecord": "nemo_gym.protocol.types",
    "RolloutMetadata": "nemo_gym.protocol.types",
    "ModelCallMetadata": "nemo_gym.protocol.types",
    "MetricsSummary": "nemo_gym.protocol.types",
    "CollectionSummary": "nemo_gym.protocol.types",
    "Usage": "nemo_gym.protocol.types",
    "JSONObject": "nemo_gym.protocol.types",
    # offline OpenRouter
    "OpenRouterEmulator": "nemo_gym.emulator",
    "EmulatorConfig": "nemo_gym.emulator",
}

__all__ = [
    "BaseAgentConfig",
    "BaseAgentServer",
    "BaseModelServer",
    "BaseResourcesServer",
    "BaseServer",
    "BaseServerConfig",
    "BudgetReached",
    "CollectionSettings",
    "CollectionSummary",
    "Collector",
    "ConfigError",
    "EmulatorConfig",
    "GlobalConfig",
    "InputError",
    "Interrupted",
    "InvalidRequest",
    "JSONObject",
    "MetricsSummary",
    "ModelCallMetadata",
    "OpenRouterEmulator",
    "Redactor",
    "ResourcesServerConfig",
    "RolloutClient",
    "RolloutMetadata",
    "RolloutRecord",
    "RolloutSettings",
    "RowGroup",
    "RunStopped",
    "ServerCallError",
    "ServerClient",
    "ServerRef",
    "Session",
    "StartupError",
    "ToolError",
    "Usage",
    "VerifyRequest",
    "VerifyResponse",
    "collect",
    "group_advantages",
    "group_records",
    "launch_servers",
    "load_global_config",
    "read_rows",
    "rollouts",
    "serve_in_thread",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nemo_gym' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
