"""NeMo Gym's `nemo_gym.global_config` as environments use it: the key-name constants they import, and the process-wide
config dict a server reads its own block from.

NeMo Gym's config API is global by design: a server process is started with its whole resolved config (by `ng_run`,
through the `NEMO_GYM_CONFIG_DICT` environment variable) and any module may ask for it. So this module keeps one piece
of module-level state, the config dict set for this process; everything else here is a constant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

# --------------------------------------------------------------------------- environment and top-level config keys

NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME = "NEMO_GYM_CONFIG_DICT"
NEMO_GYM_CONFIG_PATH_ENV_VAR_NAME = "NEMO_GYM_CONFIG_PATH"

CONFIG_PATHS_KEY_NAME = "config_paths"
ENTRYPOINT_KEY_NAME = "entrypoint"
DEFAULT_HOST_KEY_NAME = "default_host"
HEAD_SERVER_KEY_NAME = "head_server"
DISALLOWED_PORTS_KEY_NAME = "disallowed_ports"
HEAD_SERVER_DEPS_KEY_NAME = "head_server_deps"
PYTHON_VERSION_KEY_NAME = "python_version"
PIP_INSTALL_VERBOSE_KEY_NAME = "pip_install_verbose"
USE_ABSOLUTE_IP = "use_absolute_ip"
UV_PIP_SET_PYTHON_KEY_NAME = "uv_pip_set_python"
SKIP_VENV_IF_PRESENT_KEY_NAME = "skip_venv_if_present"
HF_TOKEN_KEY_NAME = "hf_token"
RAY_HEAD_NODE_ADDRESS_KEY_NAME = "ray_head_node_address"
PORT_RANGE_LOW_KEY_NAME = "port_range_low"
PORT_RANGE_HIGH_KEY_NAME = "port_range_high"
DRY_RUN_KEY_NAME = "dry_run"
UVICORN_TIMEOUT_WORKER_HEALTHCHECK = "uvicorn_timeout_worker_healthcheck"
OBSERVABILITY_ENABLED_KEY_NAME = "observability_enabled"
SKIP_VERIFICATION_KEY_NAME = "skip_verification"
SKIP_VERIFICATION_REWARD_KEY_NAME = "skip_verification_reward"

NEMO_GYM_RESERVED_TOP_LEVEL_KEYS: list[str] = [
    CONFIG_PATHS_KEY_NAME,
    ENTRYPOINT_KEY_NAME,
    DEFAULT_HOST_KEY_NAME,
    HEAD_SERVER_KEY_NAME,
    DISALLOWED_PORTS_KEY_NAME,
    HEAD_SERVER_DEPS_KEY_NAME,
    PYTHON_VERSION_KEY_NAME,
    PIP_INSTALL_VERBOSE_KEY_NAME,
    USE_ABSOLUTE_IP,
    UV_PIP_SET_PYTHON_KEY_NAME,
    SKIP_VENV_IF_PRESENT_KEY_NAME,
    HF_TOKEN_KEY_NAME,
    RAY_HEAD_NODE_ADDRESS_KEY_NAME,
    PORT_RANGE_LOW_KEY_NAME,
    PORT_RANGE_HIGH_KEY_NAME,
    DRY_RUN_KEY_NAME,
    UVICORN_TIMEOUT_WORKER_HEALTHCHECK,
    OBSERVABILITY_ENABLED_KEY_NAME,
    SKIP_VERIFICATION_KEY_NAME,
    SKIP_VERIFICATION_REWARD_KEY_NAME,
]
"""Top-level config keys that are settings, not server instances."""

POLICY_BASE_URL_KEY_NAME = "policy_base_url"
POLICY_API_KEY_KEY_NAME = "policy_api_key"
POLICY_MODEL_NAME_KEY_NAME = "policy_model_name"
POLICY_MODEL_KEY_NAME = "policy_model"
"""Also the instance name configs give the policy model server."""

DEFAULT_HEAD_SERVER_PORT = 11000

# --------------------------------------------------------------------------- keys of data rows and rollout records

TASK_INDEX_KEY_NAME = "_ng_task_index"
ROLLOUT_INDEX_KEY_NAME = "_ng_rollout_index"
ATTEMPT_INDEX_KEY_NAME = "_ng_attempt_index"
ROLLOUT_ID_KEY_NAME = "_ng_rollout_id"
RESPONSES_CREATE_PARAMS_KEY_NAME = "responses_create_params"
RESPONSE_KEY_NAME = "response"
AGENT_REF_KEY_NAME = "agent_ref"
SKILLS_REF_KEY_NAME = "skills_ref"
REWARD_KEY_NAME = "reward"
TASK_SOURCE_KEY_NAME = "task_source"

# --------------------------------------------------------------------------- metric names: `<stat>/<field>`

MEAN_STAT_NAME = "mean"
MAX_STAT_NAME = "max"
MIN_STAT_NAME = "min"
MEDIAN_STAT_NAME = "median"
STD_STAT_NAME = "std"
SEM_STAT_NAME = "sem"
P25_STAT_NAME = "p25"
P75_STAT_NAME = "p75"
CI_LOW_95_STAT_NAME = "ci_low_95"
CI_HIGH_95_STAT_NAME = "ci_high_95"
HISTOGRAM_STAT_NAME = "histogram"

STAT_SEPARATOR = "/"
MEAN_PREFIX = MEAN_STAT_NAME + STAT_SEPARATOR
MAX_PREFIX = MAX_STAT_NAME + STAT_SEPARATOR
MIN_PREFIX = MIN_STAT_NAME + STAT_SEPARATOR
MEDIAN_PREFIX = MEDIAN_STAT_NAME + STAT_SEPARATOR
STD_PREFIX = STD_STAT_NAME + STAT_SEPARATOR
SEM_PREFIX = SEM_STAT_NAME + STAT_SEPARATOR
P25_PREFIX = P25_STAT_NAME + STAT_SEPARATOR
P75_PREFIX = P75_STAT_NAME + STAT_SEPARATOR
CI_LOW_95_PREFIX = CI_LOW_95_STAT_NAME + STAT_SEPARATOR
CI_HIGH_95_PREFIX = CI_HIGH_95_STAT_NAME + STAT_SEPARATOR

# `<stat>_across_repeats/mean/<field>`: one repeat's estimate summarised over the run's repeats.
ACROSS_REPEATS_MARKER = "_across_repeats" + STAT_SEPARATOR
MEAN_ACROSS_REPEATS_PREFIX = MEAN_STAT_NAME + ACROSS_REPEATS_MARKER
MEDIAN_ACROSS_REPEATS_PREFIX = MEDIAN_STAT_NAME + ACROSS_REPEATS_MARKER
SE_ACROSS_REPEATS_PREFIX = "se" + ACROSS_REPEATS_MARKER
CI_LOW_95_ACROSS_REPEATS_PREFIX = CI_LOW_95_STAT_NAME + ACROSS_REPEATS_MARKER
CI_HIGH_95_ACROSS_REPEATS_PREFIX = CI_HIGH_95_STAT_NAME + ACROSS_REPEATS_MARKER

# Appended to a `pass@1[avg-of-{k}]/<score>` name by `compute_pass_majority_metrics` / `add_avg_sample_std_dev`.
STD_DEV_ACROSS_RUNS_SUFFIX = STAT_SEPARATOR + "std_dev_across_runs"
STD_ERR_ACROSS_RUNS_SUFFIX = STAT_SEPARATOR + "std_err_across_runs"
AVG_SAMPLE_STD_DEV_SUFFIX = STAT_SEPARATOR + "avg_sample_std_dev"

# Per-task keys in `group_level_metrics`.
ROLLOUT_INFOS_KEY_NAME = "rollout_infos"
NUM_ROLLOUTS_KEY_NAME = "num_rollouts"
EXPECTED_NUM_ROLLOUTS_KEY_NAME = "expected_num_rollouts"
MISSING_NUM_ROLLOUTS_KEY_NAME = "missing_num_rollouts"

# --------------------------------------------------------------------------- the process-wide config dict

_GLOBAL_CONFIG_DICT: DictConfig | None = None


class GlobalConfigNotSetError(RuntimeError):
    """No config dict for this process: neither set in code nor passed by `ng_run` in the environment."""


def set_global_config_dict(global_config_dict: DictConfig | Mapping[str, Any] | None) -> None:
    """Make `global_config_dict` this process's config (a plain mapping is wrapped); None forgets it, so the next
    `get_global_config_dict()` reads the environment again."""
    global _GLOBAL_CONFIG_DICT
    if global_config_dict is None or isinstance(global_config_dict, DictConfig):
        _GLOBAL_CONFIG_DICT = global_config_dict
        return
    if not isinstance(global_config_dict, Mapping):
        raise TypeError(
            f"set_global_config_dict expects a DictConfig or a mapping, got {type(global_config_dict).__name__}"
        )
    _GLOBAL_CONFIG_DICT = OmegaConf.create(dict(global_config_dict))


def get_global_config_dict() -> DictConfig:
    """This process's config: the one set with `set_global_config_dict`, else the YAML `ng_run` passed in the
    `NEMO_GYM_CONFIG_DICT` environment variable (parsed once and kept)."""
    global _GLOBAL_CONFIG_DICT
    if _GLOBAL_CONFIG_DICT is not None:
        return _GLOBAL_CONFIG_DICT
    text = os.environ.get(NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME)
    if not text:
        raise GlobalConfigNotSetError(
            f"No global config: the environment variable {NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME} is not set. A server "
            "that reads the global config must be started by `ng_run`, which passes it; in tests or scripts, call "
            "nemo_gym.global_config.set_global_config_dict({...}) first."
        )
    parsed = OmegaConf.create(text)
    if not isinstance(parsed, DictConfig):
        raise GlobalConfigNotSetError(
            f"The environment variable {NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME} holds a YAML {type(parsed).__name__}, "
            "not a mapping of top-level config keys; it should be the resolved config `ng_run` writes."
        )
    _GLOBAL_CONFIG_DICT = parsed
    return parsed


def get_first_server_config_dict(global_config_dict: DictConfig | Mapping[str, Any], top_level_path: str) -> DictConfig:
    """The config block of instance `top_level_path`: the config nests `<instance>: <server_type>: <impl>: {...}`, and
    an instance has exactly one server type and one implementation, so the first entry is taken at both levels."""
    config = (
        global_config_dict if isinstance(global_config_dict, DictConfig) else OmegaConf.create(dict(global_config_dict))
    )
    if top_level_path not in config:
        instances = sorted(
            str(key)
            for key, value in config.items()
            if isinstance(value, DictConfig) and str(key) not in NEMO_GYM_RESERVED_TOP_LEVEL_KEYS
        )
        raise KeyError(
            f"No server instance {top_level_path!r} in the global config; the instances are: {instances}. "
            "Check the instance name (the top-level key of its config block)."
        )
    block: Any = config[top_level_path]
    for level in ("server type", "implementation"):
        if not isinstance(block, DictConfig) or len(block) == 0:
            raise KeyError(
                f"Server instance {top_level_path!r} has no {level} level: the layout is "
                f"`{top_level_path}: <server_type>: <impl>: {{...}}`, got {block!r}"
            )
        block = next(iter(block.values()))
    if not isinstance(block, DictConfig):
        raise KeyError(
            f"Server instance {top_level_path!r} has {block!r} where its config mapping should be: the layout is "
            f"`{top_level_path}: <server_type>: <impl>: {{...}}`"
        )
    return block
