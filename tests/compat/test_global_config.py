"""NeMo Gym's `nemo_gym.global_config`, imported as environments import it: its key-name constants, the process-wide
config dict (set in code, or passed by `ng_run` in `NEMO_GYM_CONFIG_DICT`) and the lookup of one instance's block."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from nemo_gym.global_config import (
    AGENT_REF_KEY_NAME,
    ATTEMPT_INDEX_KEY_NAME,
    AVG_SAMPLE_STD_DEV_SUFFIX,
    CONFIG_PATHS_KEY_NAME,
    DEFAULT_HEAD_SERVER_PORT,
    DEFAULT_HOST_KEY_NAME,
    DRY_RUN_KEY_NAME,
    ENTRYPOINT_KEY_NAME,
    HEAD_SERVER_KEY_NAME,
    MEAN_PREFIX,
    NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME,
    NEMO_GYM_CONFIG_PATH_ENV_VAR_NAME,
    NEMO_GYM_RESERVED_TOP_LEVEL_KEYS,
    POLICY_API_KEY_KEY_NAME,
    POLICY_BASE_URL_KEY_NAME,
    POLICY_MODEL_KEY_NAME,
    POLICY_MODEL_NAME_KEY_NAME,
    RESPONSE_KEY_NAME,
    RESPONSES_CREATE_PARAMS_KEY_NAME,
    REWARD_KEY_NAME,
    ROLLOUT_ID_KEY_NAME,
    ROLLOUT_INDEX_KEY_NAME,
    SKILLS_REF_KEY_NAME,
    STD_DEV_ACROSS_RUNS_SUFFIX,
    STD_ERR_ACROSS_RUNS_SUFFIX,
    STD_PREFIX,
    TASK_INDEX_KEY_NAME,
    TASK_SOURCE_KEY_NAME,
    get_first_server_config_dict,
    get_global_config_dict,
    set_global_config_dict,
)

CONFIG = {
    "head_server": {"host": "127.0.0.1", "port": 11000},
    "policy_model_name": "openai/gpt-4o-mini",
    "policy_model": {"responses_api_models": {"openai_model": {"entrypoint": "app.py", "model": "gpt-4o-mini"}}},
    "math_with_judge": {"resources_servers": {"math_with_judge": {"entrypoint": "app.py", "should_use_judge": False}}},
}


@pytest.fixture(autouse=True)
def no_global_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts and ends with no config set and none in the environment."""
    monkeypatch.delenv(NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME, raising=False)
    set_global_config_dict(None)
    yield
    set_global_config_dict(None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (TASK_INDEX_KEY_NAME, "_ng_task_index"),
        (ROLLOUT_INDEX_KEY_NAME, "_ng_rollout_index"),
        (ATTEMPT_INDEX_KEY_NAME, "_ng_attempt_index"),
        (ROLLOUT_ID_KEY_NAME, "_ng_rollout_id"),
        (RESPONSES_CREATE_PARAMS_KEY_NAME, "responses_create_params"),
        (RESPONSE_KEY_NAME, "response"),
        (AGENT_REF_KEY_NAME, "agent_ref"),
        (REWARD_KEY_NAME, "reward"),
        (TASK_SOURCE_KEY_NAME, "task_source"),
        (SKILLS_REF_KEY_NAME, "skills_ref"),
        (NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME, "NEMO_GYM_CONFIG_DICT"),
        (NEMO_GYM_CONFIG_PATH_ENV_VAR_NAME, "NEMO_GYM_CONFIG_PATH"),
        (CONFIG_PATHS_KEY_NAME, "config_paths"),
        (ENTRYPOINT_KEY_NAME, "entrypoint"),
        (DEFAULT_HOST_KEY_NAME, "default_host"),
        (HEAD_SERVER_KEY_NAME, "head_server"),
        (DRY_RUN_KEY_NAME, "dry_run"),
        (POLICY_BASE_URL_KEY_NAME, "policy_base_url"),
        (POLICY_API_KEY_KEY_NAME, "policy_api_key"),
        (POLICY_MODEL_NAME_KEY_NAME, "policy_model_name"),
        (POLICY_MODEL_KEY_NAME, "policy_model"),
        (MEAN_PREFIX, "mean/"),
        (STD_PREFIX, "std/"),
        (STD_DEV_ACROSS_RUNS_SUFFIX, "/std_dev_across_runs"),
        (STD_ERR_ACROSS_RUNS_SUFFIX, "/std_err_across_runs"),
        (AVG_SAMPLE_STD_DEV_SUFFIX, "/avg_sample_std_dev"),
        (DEFAULT_HEAD_SERVER_PORT, 11000),
    ],
)
def test_the_names_environments_import_have_nemo_gyms_values(name: object, value: object) -> None:
    assert name == value


def test_the_reserved_top_level_keys_are_settings_not_instances() -> None:
    assert {CONFIG_PATHS_KEY_NAME, HEAD_SERVER_KEY_NAME, DRY_RUN_KEY_NAME} <= set(NEMO_GYM_RESERVED_TOP_LEVEL_KEYS)
    assert POLICY_MODEL_KEY_NAME not in NEMO_GYM_RESERVED_TOP_LEVEL_KEYS


def test_the_config_set_in_code_is_the_one_returned_as_a_dict_config() -> None:
    set_global_config_dict(CONFIG)

    config = get_global_config_dict()

    assert isinstance(config, DictConfig)
    assert config.policy_model_name == "openai/gpt-4o-mini"
    assert get_global_config_dict() is config


def test_a_dict_config_is_kept_as_given() -> None:
    given = OmegaConf.create(CONFIG)

    set_global_config_dict(given)

    assert get_global_config_dict() is given


def test_without_a_set_config_the_yaml_ng_run_passes_in_the_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME, yaml.safe_dump(CONFIG))

    config = get_global_config_dict()

    assert config.head_server.port == 11000
    assert config.math_with_judge.resources_servers.math_with_judge.should_use_judge is False
    monkeypatch.setenv(NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME, yaml.safe_dump({"policy_model_name": "other"}))
    assert get_global_config_dict() is config  # parsed once, then kept


def test_a_config_set_in_code_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME, yaml.safe_dump({"policy_model_name": "from-env"}))

    set_global_config_dict({"policy_model_name": "from-code"})

    assert get_global_config_dict().policy_model_name == "from-code"


def test_no_config_at_all_says_the_server_must_be_started_by_ng_run() -> None:
    with pytest.raises(RuntimeError, match="NEMO_GYM_CONFIG_DICT is not set.*started by `ng_run`"):
        get_global_config_dict()


def test_an_environment_value_that_is_not_a_mapping_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME, "- a\n- b\n")

    with pytest.raises(RuntimeError, match="NEMO_GYM_CONFIG_DICT holds a YAML ListConfig, not a mapping"):
        get_global_config_dict()


def test_the_first_server_config_dict_is_the_block_under_instance_type_and_implementation() -> None:
    set_global_config_dict(CONFIG)

    block = get_first_server_config_dict(get_global_config_dict(), "policy_model")

    assert isinstance(block, DictConfig)
    assert OmegaConf.to_container(block) == {"entrypoint": "app.py", "model": "gpt-4o-mini"}
    assert get_first_server_config_dict(CONFIG, "math_with_judge").should_use_judge is False


def test_an_unknown_instance_names_itself_and_the_instances_that_exist() -> None:
    with pytest.raises(KeyError) as raised:
        get_first_server_config_dict(OmegaConf.create(CONFIG), "judge_model")

    message = str(raised.value)
    assert "No server instance 'judge_model'" in message
    assert "['math_with_judge', 'policy_model']" in message  # head_server is a setting, not an instance


def test_an_instance_without_the_three_levels_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="'flat' has no implementation level"):
        get_first_server_config_dict({"flat": {"resources_servers": "oops"}}, "flat")


def test_a_set_config_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match="expects a DictConfig or a mapping, got list"):
        set_global_config_dict([1, 2])  # type: ignore[arg-type]
