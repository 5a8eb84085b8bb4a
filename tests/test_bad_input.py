"""Bad input gets a clear error (issue 5, point 3): one table, one row per mistake a user can make.

Each case sets up one bad input, runs the real entry point (the config loader, `prepare`, a command's `main`, the
command as a subprocess, or a collection over real HTTP) and checks what the user sees:
  status  the exception type, the exit status, the HTTP status, or the error kind of the rollout record;
  where   the message names the place: file:line, instance + key + origin file, or server + URL/field;
  fix     the message says what to do.
Subprocesses get this checkout first on PYTHONPATH, so they test this code whatever checkout is pip-installed.
Nothing talks to anything but 127.0.0.1, and every collection points at a head server of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from nemo_gym.cli import collect_rollouts, dump_config
from nemo_gym.cli import run as ng_run_cli
from nemo_gym.cli import test as ng_test_cli
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.paths import project_root
from nemo_gym.config.types import GlobalConfig
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.loading import load_server_class, prepare
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks

OPENAI_MODEL_YAML = str(project_root() / "responses_api_models/openai_model/configs/openai_model.yaml")
SIMPLE_WEATHER_YAML = str(project_root() / "resources_servers/simple_weather/configs/simple_weather.yaml")
CONFIG_PATHS = f"+config_paths=[{OPENAI_MODEL_YAML}, {SIMPLE_WEATHER_YAML}]"
AGENT = "simple_weather_simple_agent"
AGENT_KEY = f"{AGENT}.responses_api_agents.simple_agent"
MODEL_KEY = "policy_model.responses_api_models.openai_model"
GOOD_ROW = {"responses_create_params": {"input": "What's the weather in Paris?"}}


@dataclass(frozen=True)
class Seen:
    """What the user saw: a status (exception type, exit/HTTP status, or a record's error kind) and the message."""

    status: type[BaseException] | int | str
    message: str


@dataclass
class Env:
    """A case's working directory (also the process's), and lazy access to the shared servers."""

    tmp: Path
    request: pytest.FixtureRequest

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def env_yaml(self, **values: Any) -> None:
        """env.yaml with a non-OpenRouter endpoint (nothing is called) and a head server port of its own."""
        base = {
            "policy_base_url": f"http://127.0.0.1:{free_port()}/v1",
            "policy_api_key": "sk-test-bad-input-01",
            "policy_model_name": "openai/gpt-4-turbo",
            "head_server": {"port": free_port()},
        }
        self.write("env.yaml", yaml.safe_dump({**base, **values}))

    def rows(self, *lines: str, name: str = "in.jsonl") -> str:
        self.write(name, "".join(line + "\n" for line in lines))
        return name

    def cluster(self) -> GlobalConfig:
        return self.request.getfixturevalue("garbage_cluster")


# --------------------------------------------------------------------------- ways to run an entry point

Runner = Callable[[Env], Seen]


def raised(action: Callable[[], object]) -> Seen:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the case asserts which type it was
        return Seen(type(exc), str(exc))
    pytest.fail("expected an error, got none")


def load_and_prepare(env: Env, *args: str) -> Seen:
    """What ng_run checks before it starts anything."""
    return raised(lambda: prepare(load_global_config(list(args), cwd=env.tmp)))


def main_of(main: Callable[[Sequence[str]], None], *argv: str) -> Seen:
    """A command's `main(argv)` in-process: its exit status and what it printed. A crash is a status too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            return Seen(exc.code if isinstance(exc.code, int) else 1, err.getvalue() + out.getvalue())
        except Exception as exc:  # noqa: BLE001 - a traceback instead of a message is what these cases catch
            return Seen(f"crash: {type(exc).__name__}", f"{type(exc).__name__}: {exc}")
    return Seen(0, err.getvalue() + out.getvalue())


def command(env: Env, *argv: str) -> Seen:
    """The installed command as a subprocess, running this checkout's code."""
    paths = [str(project_root()), os.environ.get("PYTHONPATH", "")]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    result = subprocess.run(list(argv), cwd=env.tmp, env=environ, capture_output=True, text=True, timeout=60)
    return Seen(result.returncode, result.stderr + result.stdout)


# --------------------------------------------------------------------------- what a case does, by kind


def overrides(*args: str) -> Runner:
    return lambda env: load_and_prepare(env, *args)


def config_file(text: str, *args: str) -> Runner:
    """`conf.yaml` holding `text`, loaded and prepared."""

    def run_it(env: Env) -> Seen:
        env.write("conf.yaml", text)
        return load_and_prepare(env, "+config_paths=[conf.yaml]", *args)

    return run_it


def instance(block: str) -> Runner:
    """`conf.yaml` defining the instance `weather` as `block`."""
    return config_file("weather:\n" + textwrap.indent(textwrap.dedent(block), "  "))


def seed_configs(*args: str, **env_values: Any) -> Runner:
    """The repository's openai_model + simple_weather configs with an env.yaml, plus overrides."""

    def run_it(env: Env) -> Seen:
        env.env_yaml(**env_values)
        return load_and_prepare(env, CONFIG_PATHS, *args)

    return run_it


def cli(main: Callable[[Sequence[str]], None], *argv: str, with_env_yaml: bool = False) -> Runner:
    def run_it(env: Env) -> Seen:
        if with_env_yaml:
            env.env_yaml()
        return main_of(main, *argv)

    return run_it


def collect(*args: str, without: str = "", running: bool = False, mkdir: str = "") -> Runner:
    """ng_collect_rollouts' main with a valid input and output unless `args` replace them, a head port where
    nothing listens (or the garbage cluster's head when `running`), and `mkdir` created first."""

    def run_it(env: Env) -> Seen:
        env.rows(json.dumps(GOOD_ROW), name="good.jsonl")
        if mkdir:
            (env.tmp / mkdir).mkdir()
        head_port = env.cluster().data["head_server"]["port"] if running else free_port()
        defaults = {
            "agent_name": AGENT,
            "input_jsonl_fpath": "good.jsonl",
            "output_jsonl_fpath": "out.jsonl",
            "head_server.port": head_port,
        }
        given = {arg.lstrip("+").split("=", 1)[0] for arg in args} | {without}
        argv = [f"+{key}={value}" for key, value in defaults.items() if key not in given]
        return main_of(collect_rollouts.main, *argv, *args)

    return run_it


def collect_rows(*lines: str) -> Runner:
    """ng_collect_rollouts over an input file `in.jsonl` of these lines."""

    def run_it(env: Env) -> Seen:
        env.rows(*lines)
        return collect("+input_jsonl_fpath=in.jsonl")(env)

    return run_it


def record_of(row: dict[str, Any], *, agent: str = AGENT) -> Runner:
    """One rollout of `row` collected from the garbage cluster; the record's error is the message."""

    def run_it(env: Env) -> Seen:
        cluster = env.cluster()
        env.rows(json.dumps(row))
        data = {
            **cluster.data,
            "agent_name": agent,
            "input_jsonl_fpath": str(env.tmp / "in.jsonl"),
            "output_jsonl_fpath": str(env.tmp / "out.jsonl"),
        }
        config = GlobalConfig(data=data, origins={})
        asyncio.run(collect_rollouts.collect(config, collect_rollouts.settings_from(config)))
        (record,) = [json.loads(line) for line in (env.tmp / "out.jsonl").read_text().splitlines()]
        assert record["reward"] is None, record
        error = str(record["error"])
        return Seen(error.split(":", 1)[0], error)

    return run_it


# --------------------------------------------------------------------------- cases that need more set-up


def include_cycle(env: Env) -> Seen:
    env.write("a.yaml", "config_paths: [b.yaml]\n")
    env.write("b.yaml", "config_paths: [a.yaml]\n")
    return load_and_prepare(env, "+config_paths=[a.yaml]")


def config_path_is_a_directory(env: Env) -> Seen:
    env.write("configs/model.yaml", "a: 1\n")
    return load_and_prepare(env, "+config_paths=[configs]")


def agent_with_typo(env: Env) -> Seen:
    env.env_yaml()
    env.write(
        "agent.yaml",
        """\
        my_agent:
          responses_api_agents:
            simple_agent:
              entrypoint: app.py
              resources_server: {type: resources_servers, name: simple_weather}
              model_server: {type: responses_api_models, name: policy_model}
              max_stpes: 3
        """,
    )
    return load_and_prepare(env, f"+config_paths=[{OPENAI_MODEL_YAML}, {SIMPLE_WEATHER_YAML}, agent.yaml]")


def model_without_model_id(env: Env) -> Seen:
    env.write(
        "model.yaml",
        """\
        policy_model:
          responses_api_models:
            openai_model:
              entrypoint: app.py
              base_url: http://127.0.0.1:9/v1
        """,
    )
    return load_and_prepare(env, "+config_paths=[model.yaml]")


def env_yaml_with_a_tab(env: Env) -> Seen:
    env.write("env.yaml", "policy_model_name: openai/gpt-4-turbo\npolicy_model:\n\tmodel: x\n")
    return main_of(dump_config.main, CONFIG_PATHS)


def env_yaml_broken_on_its_key_line(env: Env) -> Seen:
    env.write("env.yaml", "policy_model_name: openai/gpt-4-turbo\npolicy_api_key: hf_LEAKCANARY01: x\n")
    return main_of(dump_config.main, CONFIG_PATHS)


def input_in_latin1(env: Env) -> Seen:
    (env.tmp / "in.jsonl").write_bytes((ROW + "\n" + ROW.replace("Paris", "Zürich") + "\n").encode("latin-1"))
    return collect("+input_jsonl_fpath=in.jsonl")(env)


def ng_run_with_a_busy_port(key: str) -> Runner:
    """ng_run with `+<key>=<a port something listens on>`."""

    def run_it(env: Env) -> Seen:
        env.env_yaml()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            return command(env, "ng_run", CONFIG_PATHS, f"+{key}={taken.getsockname()[1]}")

    return run_it


def ng_run_without_api_key(env: Env) -> Seen:
    env.write(
        "env.yaml",
        yaml.safe_dump(
            {
                "policy_base_url": "http://127.0.0.1:9/v1",
                "policy_model_name": "openai/gpt-4-turbo",
                "head_server": {"port": free_port()},
            }
        ),
    )
    return command(env, "ng_run", CONFIG_PATHS)


def head_server_unreachable(env: Env) -> Seen:
    env.rows(json.dumps(GOOD_ROW))
    return command(
        env,
        "ng_collect_rollouts",
        f"+agent_name={AGENT}",
        "+input_jsonl_fpath=in.jsonl",
        "+output_jsonl_fpath=out.jsonl",
        f"+head_server.port={free_port()}",
    )


def output_under_a_file(env: Env) -> Seen:
    env.write("notes.txt", "not a directory\n")
    return collect("+output_jsonl_fpath=notes.txt/out.jsonl", running=True)(env)


def tool_call_with_bad_arguments(env: Env) -> Seen:
    with serve_config({"simple_weather": simple_weather_blocks()["simple_weather"]}) as (config, _servers):
        url = config.instances["simple_weather"].url()
        response = httpx.post(url + "/get_weather", json={"town": "Paris"}, timeout=10)
    return Seen(response.status_code, response.json()["error"]["message"])


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    run: Runner
    status: type[BaseException] | int | str
    where: tuple[str, ...]
    fix: tuple[str, ...]


ROW = json.dumps(GOOD_ROW)
CASES = [
    # ----------------------------------------------------------------- config files
    Case(
        "missing config file",
        overrides("+config_paths=[no_such.yaml]"),
        ConfigError,
        where=("Config file not found", "no_such.yaml"),
        fix=("check the spelling in config_paths",),
    ),
    Case(
        "config path is a directory",
        config_path_is_a_directory,
        ConfigError,
        where=("configs: it is a directory",),
        fix=("config_paths must list readable YAML files",),
    ),
    Case(
        "YAML syntax error: file, line and column",
        config_file("policy_model_name: openai/gpt-4-turbo\nfallbacks: [a, b\nretries: 3\n"),
        ConfigError,
        where=("conf.yaml:3:8: not valid YAML", "started at line 2", "retries: 3"),
        fix=("close every quote and bracket",),
    ),
    Case(
        "env.yaml indented with a tab (ng_dump_config)",
        env_yaml_with_a_tab,
        2,
        where=("env.yaml:3:1: not valid YAML", r"'\t'"),
        fix=("indent with spaces (not tabs)",),
    ),
    Case(
        "top level is a list",
        config_file("- policy_model\n- simple_weather\n"),
        ConfigError,
        where=("conf.yaml", "not a list"),
        fix=("Write `key: value` lines",),
    ),
    Case(
        "config_paths is not a list",
        config_file("config_paths: {base: base.yaml}\n"),
        ConfigError,
        where=("config_paths in", "conf.yaml"),
        fix=("`config_paths: [a.yaml, b.yaml]`",),
    ),
    Case(
        "include cycle",
        include_cycle,
        ConfigError,
        where=("cycle", "a.yaml -> ", "b.yaml -> "),
        fix=("Remove", "from the config_paths of"),
    ),
    Case(
        "unknown server type",
        instance("resource_servers: {simple_weather: {entrypoint: app.py}}\n"),
        ConfigError,
        where=("'weather'", "conf.yaml", "'resource_servers'"),
        fix=("use one of responses_api_models, resources_servers, responses_api_agents",),
    ),
    Case(
        "unknown implementation folder",
        instance("resources_servers: {simple_wether: {entrypoint: app.py}}\n"),
        ConfigError,
        where=("'weather'", "conf.yaml", "resources_servers/simple_wether/"),
        fix=("Did you mean 'simple_weather'?",),
    ),
    Case(
        "missing entrypoint key",
        instance("resources_servers: {simple_weather: {port: 18001}}\n"),
        ConfigError,
        where=("'weather'", "conf.yaml", "'entrypoint'"),
        fix=("`entrypoint: app.py`",),
    ),
    Case(
        "entrypoint file does not exist",
        instance("resources_servers: {simple_weather: {entrypoint: main.py}}\n"),
        ConfigError,
        where=("'weather'", "conf.yaml", "weather.resources_servers.simple_weather.entrypoint", "main.py"),
        fix=("Set `entrypoint:` to one of the files", "app.py"),
    ),
    Case(
        "instance with two server types",
        instance(
            "resources_servers: {simple_weather: {entrypoint: app.py}}\n"
            "responses_api_agents: {simple_agent: {entrypoint: app.py}}\n"
        ),
        ConfigError,
        where=("'weather'", "conf.yaml", "resources_servers", "responses_api_agents"),
        fix=("Split it into one instance per server",),
    ),
    Case(
        "reference to a missing instance",
        seed_configs(f"+{AGENT_KEY}.resources_server.name=wether"),
        ConfigError,
        where=(f"{AGENT_KEY}.resources_server", "simple_weather.yaml", "'wether'", "not configured"),
        fix=("Configured resources_servers: simple_weather", "fix the name"),
    ),
    Case(
        "reference to an instance of the wrong type",
        seed_configs(f"+{AGENT_KEY}.resources_server.name=policy_model"),
        ConfigError,
        where=(f"{AGENT_KEY}.resources_server", "'policy_model'", "is a responses_api_models instance"),
        fix=("Configured resources_servers: simple_weather",),
    ),
    Case(
        "unknown key in an instance (typo)",
        agent_with_typo,
        ConfigError,
        where=("'my_agent'", "agent.yaml", "unknown key 'max_stpes'"),
        fix=("did you mean 'max_steps'?",),
    ),
    Case(
        "missing required key",
        model_without_model_id,
        ConfigError,
        where=("'policy_model'", "model.yaml", "missing required key 'model'"),
        fix=("add `model: ...`",),
    ),
    Case(
        "wrong value type: max_steps: many",
        seed_configs(f"+{AGENT_KEY}.max_steps=many"),
        ConfigError,
        where=(f"'{AGENT}'", "simple_weather.yaml, then the command line", "key 'max_steps'", "(got 'many')"),
        fix=("should be a valid integer",),
    ),
    Case(
        "negative timeout",
        seed_configs(f"+{MODEL_KEY}.timeout_s=-5"),
        ConfigError,
        where=("'policy_model'", "openai_model.yaml", "key 'timeout_s'", "(got -5)"),
        fix=("should be greater than 0",),
    ),
    Case(
        "missing ${interpolation} value (ng_dump_config)",
        cli(dump_config.main, f"+config_paths=[{OPENAI_MODEL_YAML}]"),
        2,
        where=(f"{MODEL_KEY}.base_url", "openai_model.yaml", "'policy_base_url' not found"),
        fix=("Define the missing value in env.yaml", "+policy_base_url=..."),
    ),
    Case(
        "unclosed ${ in a config file",
        config_file("greeting: 'hello ${name'\n"),
        ConfigError,
        where=("greeting (from conf.yaml)", "interpolation"),
        fix=(r"Write a literal '${' as '\${'",),
    ),
    Case(
        "unclosed ${ on the command line",
        overrides("+greeting=hello${name"),
        ConfigError,
        where=("'+greeting=hello${name'",),
        fix=("must be closed with `}`", r"+key='a\${b'"),
    ),
    Case(
        "bad override syntax",
        overrides("+a=[1,"),
        ConfigError,
        where=("override '+a=[1,'",),
        fix=("Overrides look like +key=value",),
    ),
    Case(
        "override without =",
        overrides("limit5"),
        ConfigError,
        where=("override 'limit5'", "missing EQUAL"),
        fix=("Overrides look like +key=value",),
    ),
    Case(
        "head server port is not a number",
        seed_configs("+head_server.port=eleven"),
        ConfigError,
        where=("head_server.port (from env.yaml, then the command line)", "'eleven'"),
        fix=("+head_server.port=11000",),
    ),
    Case(
        "misspelled top-level key on the command line (+head_servr.port)",
        seed_configs("+head_servr.port=12000"),
        ConfigError,
        where=("'head_servr'", "(from the command line: +head_servr.port=12000)"),
        fix=("did you mean +head_server.port=12000?",),
    ),
    Case(
        "misspelled top-level key in env.yaml (startup_timout_s)",
        seed_configs(startup_timout_s=5),
        ConfigError,
        where=("'startup_timout_s' (from env.yaml)",),
        fix=("Rename `startup_timout_s:` to `startup_timeout_s:` in env.yaml",),
    ),
    Case(
        "YAML syntax error on the line of a secret (ng_dump_config)",
        env_yaml_broken_on_its_key_line,
        2,
        where=("env.yaml:2:32: not valid YAML", "policy_api_key: ***REDACTED***\n"),
        fix=("Fix the syntax at that line",),
    ),
    Case(
        "startup_timeout_s is not a number (ng_run)",
        cli(ng_run_cli.main, CONFIG_PATHS, "+startup_timeout_s=soon", with_env_yaml=True),
        2,
        where=("startup_timeout_s (from the command line)", "'soon'"),
        fix=("+startup_timeout_s=600",),
    ),
    # ----------------------------------------------------------------- OpenRouter checks before spending
    Case(
        "OpenRouter key without sk-or-",
        seed_configs(policy_base_url="https://openrouter.ai/api/v1", policy_api_key="sk-abc123"),
        ConfigError,
        where=("'policy_model'", "openai_model.yaml", "api_key does not look like an OpenRouter key"),
        fix=("should start with `sk-or-`",),
    ),
    Case(
        "OpenRouter model id without provider",
        seed_configs(
            policy_base_url="https://openrouter.ai/api/v1",
            policy_api_key="sk-or-v1-test-0000",
            policy_model_name="gpt-4o",
        ),
        ConfigError,
        where=("'policy_model'", "openai_model.yaml", "model id 'gpt-4o'"),
        fix=("provider/model-name", "https://openrouter.ai/models"),
    ),
    # ----------------------------------------------------------------- ng_run, ng_test
    Case(
        "ng_run: an instance's port is in use",
        ng_run_with_a_busy_port("simple_weather.resources_servers.simple_weather.port"),
        1,
        where=("server 'simple_weather'", "cannot listen on 127.0.0.1:", "address already in use"),
        fix=("+simple_weather.resources_servers.simple_weather.port=<port>", "remove `port:`"),
    ),
    Case(
        "ng_run: the head server's port is in use",
        ng_run_with_a_busy_port("head_server.port"),
        2,
        where=("cannot start the head server on 127.0.0.1:",),
        fix=("+head_server.port=<port>",),
    ),
    Case(
        "ng_run: a value missing from env.yaml",
        ng_run_without_api_key,
        2,
        where=(f"{MODEL_KEY}.api_key", "openai_model.yaml", "'policy_api_key'"),
        fix=("env.yaml (for example `policy_api_key: ...`)", "+policy_api_key=..."),
    ),
    Case(
        "ng_test: no such server folder",
        cli(ng_test_cli.main, "+entrypoint=resources_servers/simple_wether"),
        2,
        where=("+entrypoint=resources_servers/simple_wether", "no such folder"),
        fix=("Did you mean +entrypoint=resources_servers/simple_weather?",),
    ),
    # ----------------------------------------------------------------- ng_collect_rollouts: input and settings
    Case(
        "input file missing",
        collect("+input_jsonl_fpath=missing.jsonl"),
        2,
        where=("missing.jsonl",),
        fix=("+input_jsonl_fpath",),
    ),
    Case(
        "input is a directory",
        collect("+input_jsonl_fpath=data", mkdir="data"),
        2,
        where=("data", "is a directory"),
        fix=("+input_jsonl_fpath", "JSONL file"),
    ),
    Case(
        "malformed JSON on line 3",
        collect_rows(ROW, ROW, '{"responses_create_params": {"input": "hi"'),
        2,
        where=("in.jsonl:3: not valid JSON",),
        fix=("Each line must be one JSON object",),
    ),
    Case(
        "row that is not an object",
        collect_rows(ROW, '["a", "list"]'),
        2,
        where=("in.jsonl:2",),
        fix=("a row must be a JSON object",),
    ),
    Case(
        "row without responses_create_params",
        collect_rows('{"question": "Weather in Paris?"}'),
        2,
        where=("in.jsonl:1", "`responses_create_params`"),
        fix=('e.g. {"responses_create_params": {"input"',),
    ),
    Case(
        "responses_create_params without input",
        collect_rows('{"responses_create_params": {"tools": []}}'),
        2,
        where=("in.jsonl:1", "with an `input`"),
        fix=('e.g. {"responses_create_params": {"input"',),
    ),
    Case(
        "input file not UTF-8",
        input_in_latin1,
        2,
        where=("in.jsonl:2: not UTF-8: byte 0xfc at byte offset", "lines that are not UTF-8: 2"),
        fix=("iconv -f latin1 -t utf-8", "+input_jsonl_fpath="),
    ),
    Case("empty input file", collect_rows("", "  "), 2, where=("in.jsonl",), fix=("one JSON object",)),
    Case("limit=0", collect("+limit=0"), 2, where=("+limit",), fix=("greater than or equal to 1",)),
    Case("num_repeats=-1", collect("+num_repeats=-1"), 2, where=("+num_repeats",), fix=("greater than or equal to 1",)),
    Case("unknown setting (typo +limt=5)", collect("+limt=5"), 2, where=("+limt",), fix=("did you mean +limit",)),
    Case(
        "missing agent_name",
        collect(without="agent_name"),
        2,
        where=("+agent_name",),
        fix=("Required: +agent_name=...",),
    ),
    Case(
        "unknown agent lists the agents",
        collect("+agent_name=nope", running=True),
        2,
        where=("No agent named 'nope'",),
        fix=(f"Agents: fake_agent, {AGENT}", "+agent_name="),
    ),
    Case(
        "head server unreachable (ng_collect_rollouts)",
        head_server_unreachable,
        2,
        where=("Cannot reach the ng_run head server at http://127.0.0.1:",),
        fix=("Start the servers first with ng_run", "+head_server.port="),
    ),
    Case(
        "output path is a directory",
        collect("+output_jsonl_fpath=results", mkdir="results"),
        2,
        where=("+output_jsonl_fpath=", "is a directory"),
        fix=("give a file path such as",),
    ),
    Case(
        "output path under a file",
        output_under_a_file,
        2,
        where=("+output_jsonl_fpath", "notes.txt"),
        fix=("writable",),
    ),
    # ----------------------------------------------------------------- servers answering garbage
    Case(
        "resources server /verify answers non-JSON",
        record_of({**GOOD_ROW, "fake": "verify_not_json"}),
        "ServerCallError",
        where=("'simple_weather' answered http://127.0.0.1:", "/verify", "not JSON"),
        fix=("look in its log",),
    ),
    Case(
        "resources server /verify answers without reward",
        record_of({**GOOD_ROW, "fake": "verify_without_reward"}),
        "ServerCallError",
        where=("resources server 'simple_weather' answered /verify", '{"score": 1.0}', "numeric `reward`"),
        fix=("Fix that server's verify()",),
    ),
    Case(
        "resources server /seed_session answers a list",
        record_of({**GOOD_ROW, "fake": "seed_list"}),
        "ServerCallError",
        where=("resources server 'simple_weather' answered /seed_session", "`session_id`"),
        fix=("Fix that server's seed_session()",),
    ),
    Case(
        "agent /run answers without reward",
        record_of(GOOD_ROW, agent="fake_agent"),
        "BadAgentResponse",
        where=("'fake_agent'", "/run"),
        fix=("reward", "check that agent's log"),
    ),
    Case(
        "tool call with bad arguments",
        tool_call_with_bad_arguments,
        422,
        where=("Invalid arguments for get_weather", "city: Field required"),
        fix=("city (string, required)",),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input_gets_a_clear_error(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    seen = case.run(Env(tmp_path, request))
    if os.environ.get("SHOW_MESSAGES"):
        print(f"\n### {case.id}: {seen.status!r}\n{seen.message}")

    assert seen.status == case.status, seen.message
    for where in case.where:
        assert where in seen.message, f"the message does not name {where!r}:\n{seen.message}"
    for fix in case.fix:
        assert fix in seen.message, f"the message does not say {fix!r}:\n{seen.message}"
    assert "Traceback" not in seen.message


def test_the_table_covers_at_least_thirty_mistakes() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 30


# --------------------------------------------------------------------------- servers that answer garbage


def garbage_app() -> FastAPI:
    """Plays a model server, a resources server and an agent, each answering what a row's `fake` asks for."""
    app = FastAPI()

    @app.post("/v1/responses")
    async def responses() -> dict[str, Any]:
        return {
            "id": "resp_1",
            "object": "response",
            "model": "fake/model",
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Sunny in Paris.", "annotations": []}],
                }
            ],
            "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
        }

    @app.post("/seed_session", response_model=None)
    async def seed_session(request: Request) -> Any:
        row = (await request.json())["row"]
        return [1, 2] if row.get("fake") == "seed_list" else {"session_id": "fake-session"}

    @app.post("/verify", response_model=None)
    async def verify(request: Request) -> Any:
        fake = (await request.json())["row"].get("fake")
        if fake == "verify_not_json":
            return PlainTextResponse("<html>Internal Server Error</html>")
        return JSONResponse({"score": 1.0} if fake == "verify_without_reward" else {"reward": 1.0})

    @app.post("/close_session")
    async def close_session() -> dict[str, bool]:
        return {"closed": True}

    @app.post("/run")
    async def agent_run() -> dict[str, Any]:
        return {"response": {"output": []}, "note": "no reward here"}

    return app


@pytest.fixture(scope="module")
def garbage_cluster() -> Iterator[GlobalConfig]:
    """The real simple_agent (plus a fake agent) whose model and resources server are the garbage app; a head."""
    fake_port = free_port()
    with serve_in_thread(garbage_app(), port=fake_port):
        blocks = simple_weather_blocks()
        blocks["simple_weather"]["resources_servers"]["simple_weather"]["port"] = fake_port
        fake_agent = json.loads(json.dumps(blocks[AGENT]))
        fake_agent["responses_api_agents"]["simple_agent"]["port"] = fake_port
        data = {
            "policy_model": openai_model_block("http://127.0.0.1:9/v1", port=fake_port),
            **blocks,
            "fake_agent": fake_agent,
        }
        config = prepare(GlobalConfig(data=data, origins={}))
        spec = config.instances[AGENT]
        agent = load_server_class(spec).from_global_config(AGENT, config)
        with serve_in_thread(agent.build_app(), port=int(spec.config["port"])):
            head_port = free_port()
            with serve_in_thread(build_head_app(config), port=head_port):
                yield GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={})
