"""NeMo Gym's `nemo_gym.server_utils`, provided by `nemo_gym.compat` (see docs/porting_nemo_gym_environments.md)."""

from nemo_gym.compat.configs import BaseServerConfig
from nemo_gym.compat.server_client import (
    DEFAULT_HEAD_SERVER_PORT,
    MAX_NUM_TRIES,
    SESSION_ID_KEY,
    BaseServer,
    ServerClient,
    SimpleServer,
    get_response_json,
    get_server_url,
    raise_for_status,
)

__all__ = [
    "DEFAULT_HEAD_SERVER_PORT",
    "MAX_NUM_TRIES",
    "SESSION_ID_KEY",
    "BaseServer",
    "BaseServerConfig",
    "ServerClient",
    "SimpleServer",
    "get_response_json",
    "get_server_url",
    "raise_for_status",
]
