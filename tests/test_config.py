"""Configuration loading: config files < env.yaml < `+key=value` overrides, includes, interpolation, instances.

Each test builds its own files under `tmp_path` and passes `cwd=tmp_path`, so no test reads the developer's
real env.yaml.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.overrides import normalize_override, parse_overrides
from nemo_gym.config.paths import project_root, resolve_input_path
from nemo_gym.config.types import GlobalConfig, find_instances
from nemo_gym.servers.loading import prepare

OPENAI_MODEL_YAML = "responses_api_models/openai_model/configs/openai_model.yaml"
SIMPLE_WEATHER_YAML = "resources_servers/simple_weather/configs/simple_weather.yaml"
# Exactly what the seed's `ng_run "+config_paths=[${config_paths}]"` passes when the line continuation
# inside the quoted `config_paths="...yaml, \<newline>...yaml"` survives: a literal backslash and newline.
SEED_CONFIG_PATHS_OVERRIDE = f"+config_paths=[{OPENAI_MODEL_YAML}, \\\n{SIMPLE_WEATHER_YAML}]"
SEED_ENV_YAML = """\
policy_base_url: https://openrouter.ai/api/v1
policy_api_key: sk-or-v1-abcdef123456
policy_model_name: meta-llama/llama-3.1-8b-instruct:free
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, *args: str) -> GlobalConfig:
    return load_global_config(list(args), cwd=tmp_path)


def openai_model_yaml(tmp_path: Path, block: str) -> Path:
    """A config file (in tmp_path) defining `policy_model` as an openai_model instance with `block` inside."""
    body = textwrap.indent(textwrap.dedent(block), " " * 6)
    return write(tmp_path / "model.yaml", "policy_model:\n  responses_api_models:\n    openai_model:\n" + body)


# --------------------------------------------------------------------------- precedence


class TestPrecedence:
    def test_later_config_file_wins_over_earlier(self, tmp_path: Path) -> None:
        write(tmp_path / "first.yaml", "shared: from-first\nonly_first: 1\n")
        write(tmp_path / "second.yaml", "shared: from-second\nonly_second: 2\n")

        config = load(tmp_path, "+config_paths=[first.yaml, second.yaml]")

        assert config.data["shared"] == "from-second"
        assert config.data["only_first"] == 1
        assert config.data["only_second"] == 2

    def test_config_paths_order_decides_not_file_names(self, tmp_path: Path) -> None:
        write(tmp_path / "first.yaml", "shared: from-first\n")
        write(tmp_path / "second.yaml", "shared: from-second\n")

        assert load(tmp_path, "+config_paths=[second.yaml, first.yaml]").data["shared"] == "from-first"

    def test_env_yaml_in_working_directory_wins_over_config_files(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "shared: from-file\nfile_only: kept\n")
        write(tmp_path / "env.yaml", "shared: from-env\n")

        config = load(tmp_path, "+config_paths=[conf.yaml]")

        assert config.data["shared"] == "from-env"
        assert config.data["file_only"] == "kept"

    def test_command_line_wins_over_env_yaml_and_config_files(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "shared: from-file\n")
        write(tmp_path / "env.yaml", "shared: from-env\n")

        config = load(tmp_path, "+config_paths=[conf.yaml]", "+shared=from-command-line")

        assert config.data["shared"] == "from-command-line"

    def test_later_override_of_the_same_key_wins(self, tmp_path: Path) -> None:
        assert load(tmp_path, "+x=1", "+x=2").data["x"] == 2

    def test_nested_mappings_merge_key_by_key_across_sources(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "block: {a: file, b: file, c: file}\n")
        write(tmp_path / "env.yaml", "block: {b: env, c: env}\n")

        config = load(tmp_path, "+config_paths=[conf.yaml]", "+block.c=cli")

        assert config.data["block"] == {"a": "file", "b": "env", "c": "cli"}

    def test_env_yaml_is_read_from_the_given_working_directory_only(self, tmp_path: Path) -> None:
        write(tmp_path / "elsewhere" / "env.yaml", "marker: elsewhere\n")
        write(tmp_path / "here" / "env.yaml", "marker: here\n")

        assert load(tmp_path / "here").data["marker"] == "here"
        assert "marker" not in load(tmp_path).data

    def test_config_paths_may_come_from_env_yaml_and_the_command_line_replaces_them(self, tmp_path: Path) -> None:
        write(tmp_path / "a.yaml", "picked: a\n")
        write(tmp_path / "b.yaml", "picked: b\n")
        write(tmp_path / "env.yaml", "config_paths: [a.yaml]\n")

        assert load(tmp_path).data["picked"] == "a"
        assert load(tmp_path, "+config_paths=[b.yaml]").data["picked"] == "b"

    def test_origins_name_the_source_of_each_top_level_key(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "from_file: 1\nfrom_env: 1\nfrom_cli: 1\n")
        write(tmp_path / "env.yaml", "from_env: 2\nfrom_cli: 2\n")

        origins = load(tmp_path, "+config_paths=[conf.yaml]", "+from_cli=3").origins

        assert origins["from_file"] == "conf.yaml"
        assert origins["from_env"] == "env.yaml"
        assert origins["from_cli"] == "the command line"

    def test_a_partial_nested_override_keeps_the_file_in_the_origin(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "block: {a: 1}\n")

        origin = load(tmp_path, "+config_paths=[conf.yaml]", "+block.b=2").origins["block"]

        assert "conf.yaml" in origin
        assert "the command line" in origin


# --------------------------------------------------------------------------- config_paths inside config files


class TestIncludes:
    def test_a_config_file_can_list_further_config_paths_and_wins_over_them(self, tmp_path: Path) -> None:
        write(tmp_path / "base.yaml", "shared: from-base\nbase_only: yes\n")
        write(tmp_path / "top.yaml", "config_paths: [base.yaml]\nshared: from-top\n")

        config = load(tmp_path, "+config_paths=[top.yaml]")

        assert config.data["shared"] == "from-top"
        assert config.data["base_only"] is True
        assert config.origins["base_only"] == "base.yaml"
        assert config.origins["shared"] == "top.yaml"

    def test_includes_nest_several_levels(self, tmp_path: Path) -> None:
        write(tmp_path / "c.yaml", "level_c: 3\nshared: c\n")
        write(tmp_path / "b.yaml", "config_paths: [c.yaml]\nlevel_b: 2\nshared: b\n")
        write(tmp_path / "a.yaml", "config_paths: [b.yaml]\nlevel_a: 1\n")

        data = load(tmp_path, "+config_paths=[a.yaml]").data

        assert (data["level_a"], data["level_b"], data["level_c"], data["shared"]) == (1, 2, 3, "b")

    def test_included_paths_are_relative_to_the_including_file(self, tmp_path: Path) -> None:
        write(tmp_path / "configs" / "sub" / "inner.yaml", "inner: found\n")
        write(tmp_path / "configs" / "outer.yaml", "config_paths: [sub/inner.yaml]\n")

        assert load(tmp_path, "+config_paths=[configs/outer.yaml]").data["inner"] == "found"

    def test_command_line_paths_are_relative_to_the_working_directory(self, tmp_path: Path) -> None:
        write(tmp_path / "project" / "conf.yaml", "where: project\n")

        assert load(tmp_path / "project", "+config_paths=[conf.yaml]").data["where"] == "project"

    def test_repository_config_paths_resolve_from_any_working_directory(self, tmp_path: Path) -> None:
        assert resolve_input_path(OPENAI_MODEL_YAML, cwd=tmp_path) == project_root() / OPENAI_MODEL_YAML

    def test_absolute_paths_are_used_as_given(self, tmp_path: Path) -> None:
        conf = write(tmp_path / "abs.yaml", "absolute: true\n")

        assert load(tmp_path / "nowhere", f"+config_paths=[{conf}]").data["absolute"] is True

    def test_an_include_cycle_is_a_config_error_showing_the_chain(self, tmp_path: Path) -> None:
        write(tmp_path / "a.yaml", "config_paths: [b.yaml]\n")
        write(tmp_path / "b.yaml", "config_paths: [a.yaml]\n")

        with pytest.raises(ConfigError, match="cycle") as info:
            load(tmp_path, "+config_paths=[a.yaml]")

        assert "a.yaml" in str(info.value)
        assert "b.yaml" in str(info.value)

    def test_a_file_including_itself_is_a_cycle(self, tmp_path: Path) -> None:
        write(tmp_path / "self.yaml", "config_paths: [self.yaml]\n")

        with pytest.raises(ConfigError, match="cycle"):
            load(tmp_path, "+config_paths=[self.yaml]")

    def test_the_same_file_included_twice_without_a_cycle_is_fine(self, tmp_path: Path) -> None:
        write(tmp_path / "common.yaml", "common: 1\n")
        write(tmp_path / "left.yaml", "config_paths: [common.yaml]\nleft: 1\n")
        write(tmp_path / "right.yaml", "config_paths: [common.yaml]\nright: 1\n")

        data = load(tmp_path, "+config_paths=[left.yaml, right.yaml]").data

        assert data["common"] == data["left"] == data["right"] == 1

    def test_a_missing_config_file_is_a_config_error_naming_it(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not found") as info:
            load(tmp_path, "+config_paths=[no_such_file.yaml]")

        assert "no_such_file.yaml" in str(info.value)

    def test_a_missing_included_file_is_a_config_error_naming_it(self, tmp_path: Path) -> None:
        write(tmp_path / "top.yaml", "config_paths: [gone.yaml]\n")

        with pytest.raises(ConfigError, match="gone.yaml"):
            load(tmp_path, "+config_paths=[top.yaml]")

    @pytest.mark.parametrize("text", ["key: [unclosed\n", "- a list\n- not a mapping\n"])
    def test_a_file_that_is_not_a_yaml_mapping_is_a_config_error(self, tmp_path: Path, text: str) -> None:
        write(tmp_path / "bad.yaml", text)

        with pytest.raises(ConfigError, match="bad.yaml"):
            load(tmp_path, "+config_paths=[bad.yaml]")

    def test_an_empty_config_file_contributes_nothing(self, tmp_path: Path) -> None:
        write(tmp_path / "empty.yaml", "")

        assert load(tmp_path, "+config_paths=[empty.yaml]").data == {"config_paths": ["empty.yaml"]}


# --------------------------------------------------------------------------- interpolation


class TestInterpolation:
    def test_the_seed_openai_model_yaml_resolves_from_env_yaml(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", SEED_ENV_YAML)

        block = load(tmp_path, f"+config_paths=[{OPENAI_MODEL_YAML}]").data["policy_model"]

        assert block == {
            "responses_api_models": {
                "openai_model": {
                    "entrypoint": "app.py",
                    "base_url": "https://openrouter.ai/api/v1",
                    "api_key": "sk-or-v1-abcdef123456",
                    "model": "meta-llama/llama-3.1-8b-instruct:free",
                }
            }
        }

    def test_interpolation_sees_the_final_merged_value(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "name: from-file\ngreeting: hello ${name}\n")
        write(tmp_path / "env.yaml", "name: from-env\n")

        config = load(tmp_path, "+config_paths=[conf.yaml]", "+name=from-cli")

        assert config.data["greeting"] == "hello from-cli"

    def test_interpolation_of_nested_keys_and_from_overrides(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "server: {host: 127.0.0.1, port: 8080}\n")

        config = load(tmp_path, "+config_paths=[conf.yaml]", "+url=http://${server.host}:${server.port}")

        assert config.data["url"] == "http://127.0.0.1:8080"

    def test_a_missing_value_names_the_key_its_file_and_how_to_define_it(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", "policy_api_key: sk-or-v1-abcdef123456\npolicy_model_name: m\n")

        with pytest.raises(ConfigError) as info:
            load(tmp_path, f"+config_paths=[{OPENAI_MODEL_YAML}]")

        message = str(info.value)
        assert "policy_model.responses_api_models.openai_model.base_url" in message
        assert OPENAI_MODEL_YAML in message
        assert "policy_base_url" in message
        assert "env.yaml" in message
        assert "+policy_base_url=" in message

    def test_an_unparsable_interpolation_is_a_config_error_naming_key_and_file(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "password: 'abc${oops'\n")

        with pytest.raises(ConfigError) as info:
            load(tmp_path, "+config_paths=[conf.yaml]")

        assert "password" in str(info.value)
        assert "conf.yaml" in str(info.value)

    def test_an_escaped_dollar_brace_stays_literal(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "template: 'cost \\${amount}'\n")

        assert load(tmp_path, "+config_paths=[conf.yaml]").data["template"] == "cost ${amount}"

    def test_merging_a_mapping_onto_a_list_is_a_config_error_naming_the_key(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "items: [1, 2]\n")

        with pytest.raises(ConfigError) as info:
            load(tmp_path, "+config_paths=[conf.yaml]", "+items.first=1")

        assert "items" in str(info.value)
        assert "the command line" in str(info.value)


# --------------------------------------------------------------------------- command-line overrides


class TestOverrides:
    @pytest.mark.parametrize(
        "separator",
        [", \\\n", ", \\\r\n", ",\\\n", ", ", ","],
        ids=["backslash-newline", "backslash-crlf", "no-space-backslash-newline", "comma-space", "comma"],
    )
    def test_the_seed_config_paths_override_parses(self, separator: str) -> None:
        override = f"+config_paths=[{OPENAI_MODEL_YAML}{separator}{SIMPLE_WEATHER_YAML}]"

        assert parse_overrides([override]) == {"config_paths": [OPENAI_MODEL_YAML, SIMPLE_WEATHER_YAML]}

    def test_the_seed_string_exactly(self) -> None:
        assert parse_overrides([SEED_CONFIG_PATHS_OVERRIDE])["config_paths"] == [
            OPENAI_MODEL_YAML,
            SIMPLE_WEATHER_YAML,
        ]

    def test_normalize_override_removes_line_continuations(self) -> None:
        assert normalize_override("+x=[a, \\\n  b]\n") == "+x=[a,    b]"

    @pytest.mark.parametrize(
        ("override", "expected"),
        [
            (
                "+policy_model_name=meta-llama/llama-3.1-8b-instruct:free",
                {"policy_model_name": "meta-llama/llama-3.1-8b-instruct:free"},
            ),
            ("+policy_base_url=https://openrouter.ai/api/v1", {"policy_base_url": "https://openrouter.ai/api/v1"}),
            ("+policy_api_key=sk-or-v1-abcdef123456", {"policy_api_key": "sk-or-v1-abcdef123456"}),
            ("+agent_name=simple_weather_simple_agent", {"agent_name": "simple_weather_simple_agent"}),
            (
                "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
                {"input_jsonl_fpath": "resources_servers/simple_weather/data/example.jsonl"},
            ),
            ("+a.b.c=1", {"a": {"b": {"c": 1}}}),
            ("+limit=10", {"limit": 10}),
            ("+temperature=0.7", {"temperature": 0.7}),
            ("+debug=true", {"debug": True}),
            ("+debug=false", {"debug": False}),
            ("+items=[1, two, 3.5]", {"items": [1, "two", 3.5]}),
            ("+empty=[]", {"empty": []}),
            ("+mapping={a: 1, b: x}", {"mapping": {"a": 1, "b": "x"}}),
            ("+quoted='10'", {"quoted": "10"}),
            ("+nothing=null", {"nothing": None}),
            ("plain_key=value", {"plain_key": "value"}),
        ],
    )
    def test_override_values_follow_the_hydra_grammar(self, override: str, expected: dict[str, Any]) -> None:
        assert parse_overrides([override]) == expected

    def test_dotted_overrides_build_one_nested_mapping(self) -> None:
        assert parse_overrides(["+a.b=1", "+a.c=2", "+a.b=3"]) == {"a": {"b": 3, "c": 2}}

    def test_dotted_override_changes_one_key_of_a_file_block(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "a: {b: {c: 0, keep: yes}}\n")

        data = load(tmp_path, "+config_paths=[conf.yaml]", "+a.b.c=1").data

        assert data["a"] == {"b": {"c": 1, "keep": True}}

    def test_blank_arguments_are_ignored(self) -> None:
        assert parse_overrides(["", "  ", "+x=1"]) == {"x": 1}

    def test_an_unparsable_override_is_a_config_error_with_an_example(self) -> None:
        with pytest.raises(ConfigError) as info:
            parse_overrides(["+config_paths=[a.yaml"])

        assert "+config_paths=[a.yaml" in str(info.value)
        assert "+key=value" in str(info.value)


# --------------------------------------------------------------------------- the repository's own configs


class TestRepositoryConfigs:
    def test_seed_configs_with_env_yaml_give_three_instances(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", SEED_ENV_YAML)

        config = load(tmp_path, SEED_CONFIG_PATHS_OVERRIDE)
        instances = config.instances

        assert {name: (spec.server_type, spec.impl) for name, spec in instances.items()} == {
            "policy_model": ("responses_api_models", "openai_model"),
            "simple_weather": ("resources_servers", "simple_weather"),
            "simple_weather_simple_agent": ("responses_api_agents", "simple_agent"),
        }
        model = instances["policy_model"].config
        assert model["base_url"] == "https://openrouter.ai/api/v1"
        assert model["api_key"] == "sk-or-v1-abcdef123456"
        assert model["model"] == "meta-llama/llama-3.1-8b-instruct:free"
        agent = instances["simple_weather_simple_agent"].config
        assert agent["resources_server"] == {"type": "resources_servers", "name": "simple_weather"}
        assert agent["model_server"] == {"type": "responses_api_models", "name": "policy_model"}
        assert instances["policy_model"].origin == OPENAI_MODEL_YAML
        assert instances["simple_weather"].origin == SIMPLE_WEATHER_YAML
        assert instances["policy_model"].entrypoint_path == project_root() / "responses_api_models/openai_model/app.py"

    def test_command_line_overrides_env_yaml_for_the_seed_model(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", SEED_ENV_YAML)

        config = load(tmp_path, SEED_CONFIG_PATHS_OVERRIDE, "+policy_model_name=openai/gpt-4-turbo")

        assert config.instances["policy_model"].config["model"] == "openai/gpt-4-turbo"

    def test_non_instance_keys_are_not_instances(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", SEED_ENV_YAML)

        names = set(load(tmp_path, SEED_CONFIG_PATHS_OVERRIDE, "+head_server.port=12345").instances)

        assert not names & {"policy_base_url", "policy_api_key", "policy_model_name", "head_server", "config_paths"}

    def test_head_server_defaults_and_overrides(self, tmp_path: Path) -> None:
        assert load(tmp_path).head_url == "http://127.0.0.1:11000"
        assert load(tmp_path, "+head_server.port=12345").head_url == "http://127.0.0.1:12345"

    def test_prepare_validates_the_seed_configs_and_assigns_free_ports(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", SEED_ENV_YAML)

        prepared = prepare(load(tmp_path, SEED_CONFIG_PATHS_OVERRIDE))

        ports = [spec.config["port"] for spec in prepared.instances.values()]
        assert len(ports) == 3
        assert all(isinstance(port, int) and 0 < port < 65536 for port in ports)
        assert len(set(ports)) == 3

    def test_prepare_keeps_a_configured_port(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", SEED_ENV_YAML)
        override = "+simple_weather.resources_servers.simple_weather.port=18123"

        prepared = prepare(load(tmp_path, SEED_CONFIG_PATHS_OVERRIDE, override))

        assert prepared.instances["simple_weather"].config["port"] == 18123


# --------------------------------------------------------------------------- bad configs fail early and clearly


class TestBadConfigs:
    def test_unknown_server_type_names_instance_and_type(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "mystery: {resource_servers: {simple_weather: {entrypoint: app.py}}}\n")

        with pytest.raises(ConfigError) as info:
            _ = load(tmp_path, "+config_paths=[conf.yaml]").instances

        message = str(info.value)
        assert "'mystery'" in message
        assert "resource_servers" in message
        assert "conf.yaml" in message
        assert "resources_servers" in message  # the valid choices

    def test_unknown_implementation_folder_names_instance_and_folder(self, tmp_path: Path) -> None:
        write(tmp_path / "conf.yaml", "ghost: {resources_servers: {no_such_env: {entrypoint: app.py}}}\n")

        with pytest.raises(ConfigError) as info:
            _ = load(tmp_path, "+config_paths=[conf.yaml]").instances

        assert "'ghost'" in str(info.value)
        assert "resources_servers/no_such_env" in str(info.value)

    def test_an_instance_without_entrypoint_names_the_missing_key(self) -> None:
        with pytest.raises(ConfigError, match="entrypoint") as info:
            find_instances({"weather": {"resources_servers": {"simple_weather": {"port": 1}}}}, {})

        assert "'weather'" in str(info.value)

    def test_an_instance_with_two_server_types_is_rejected(self) -> None:
        block = {"entrypoint": "app.py"}
        data = {"both": {"resources_servers": {"simple_weather": block}, "responses_api_agents": {"x": block}}}

        with pytest.raises(ConfigError, match="'both'"):
            find_instances(data, {})

    def test_a_reference_to_a_missing_instance_lists_the_configured_ones(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", SEED_ENV_YAML)
        override = "+simple_weather_simple_agent.responses_api_agents.simple_agent.resources_server.name=missing"

        with pytest.raises(ConfigError) as info:
            _ = load(tmp_path, SEED_CONFIG_PATHS_OVERRIDE, override).instances

        message = str(info.value)
        assert "simple_weather_simple_agent.responses_api_agents.simple_agent.resources_server" in message
        assert "'missing'" in message
        assert "simple_weather" in message.split("'missing'", 1)[1]  # what does exist
        assert SIMPLE_WEATHER_YAML in message

    def test_a_reference_to_an_instance_of_another_type_is_rejected(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", SEED_ENV_YAML)
        override = "+simple_weather_simple_agent.responses_api_agents.simple_agent.resources_server.name=policy_model"

        with pytest.raises(ConfigError, match="responses_api_models"):
            _ = load(tmp_path, SEED_CONFIG_PATHS_OVERRIDE, override).instances

    def test_a_missing_model_config_is_reported_by_the_agent_reference(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as info:
            _ = load(tmp_path, f"+config_paths=[{SIMPLE_WEATHER_YAML}]").instances

        assert "'policy_model'" in str(info.value)
        assert "config_paths" in str(info.value)

    def test_prepare_rejects_an_unknown_key_naming_instance_key_and_file(self, tmp_path: Path) -> None:
        write(tmp_path / "env.yaml", SEED_ENV_YAML)
        write(
            tmp_path / "agent.yaml",
            """\
            my_agent:
              responses_api_agents:
                simple_agent:
                  entrypoint: app.py
                  resources_server: {type: resources_servers, name: simple_weather}
                  model_server: {type: responses_api_models, name: policy_model}
                  max_stepz: 3
            """,
        )

        with pytest.raises(ConfigError) as info:
            prepare(load(tmp_path, SEED_CONFIG_PATHS_OVERRIDE.replace("]", ", agent.yaml]")))

        message = str(info.value)
        assert "'my_agent'" in message
        assert "max_stepz" in message
        assert "agent.yaml" in message
        assert "max_steps" in message  # the allowed keys point at the typo

    def test_prepare_rejects_a_missing_required_key_naming_instance_key_and_file(self, tmp_path: Path) -> None:
        openai_model_yaml(tmp_path, "entrypoint: app.py\nbase_url: http://127.0.0.1:9/v1\n")

        with pytest.raises(ConfigError) as info:
            prepare(load(tmp_path, "+config_paths=[model.yaml]"))

        message = str(info.value)
        assert "'policy_model'" in message
        assert "missing required key 'model'" in message
        assert "model.yaml" in message

    def test_prepare_reports_a_wrongly_typed_value(self, tmp_path: Path) -> None:
        openai_model_yaml(tmp_path, "entrypoint: app.py\nbase_url: http://127.0.0.1:9/v1\nmodel: m\ntimeout_s: soon\n")

        with pytest.raises(ConfigError, match="timeout_s"):
            prepare(load(tmp_path, "+config_paths=[model.yaml]"))

    def test_prepare_with_no_instances_explains_how_to_pass_config_paths(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"\+config_paths="):
            prepare(load(tmp_path))
