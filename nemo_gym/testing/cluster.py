"""Run a whole configuration in-process for tests: every instance served on its own loopback port in a thread."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx

from nemo_gym.config.paths import find_server_dir
from nemo_gym.config.types import GlobalConfig
from nemo_gym.config.yaml_files import load_yaml_file
from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.base import BaseServer
from nemo_gym.servers.loading import load_server_class, prepare
from nemo_gym.servers.serving import serve_in_thread


@contextmanager
def serve_config(data: Mapping[str, Any]) -> Iterator[tuple[GlobalConfig, dict[str, BaseServer]]]:
    """Validate `data`, assign free ports, serve every instance; yields the config (with ports) and servers."""
    config = prepare(GlobalConfig(data=dict(data), origins={}))
    servers: dict[str, BaseServer] = {}
    with ExitStack() as stack:
        for name, spec in config.instances.items():
            server = load_server_class(spec).from_global_config(name, config)
            servers[name] = server
            stack.enter_context(
                serve_in_thread(
                    server.build_app(), host=spec.config.get("host", "127.0.0.1"), port=int(spec.config["port"])
                )
            )
        yield config, servers


def openai_model_block(
    base_url: str, *, model: str = "stub/weather-model", api_key: str | None = "sk-test-key-0001", **extra: Any
) -> JSONObject:
    """An `openai_model` instance block pointing at `base_url` (e.g. a StubUpstream's URL + "/v1")."""
    return {
        "responses_api_models": {
            "openai_model": {"entrypoint": "app.py", "base_url": base_url, "api_key": api_key, "model": model, **extra}
        }
    }


def simple_weather_blocks(*, model_instance: str = "policy_model", max_steps: int = 6) -> JSONObject:
    """The simple_weather resources server and its agent, as configs/simple_weather.yaml defines them."""
    return {
        "simple_weather": {"resources_servers": {"simple_weather": {"entrypoint": "app.py"}}},
        "simple_weather_simple_agent": {
            "responses_api_agents": {
                "simple_agent": {
                    "entrypoint": "app.py",
                    "resources_server": {"type": "resources_servers", "name": "simple_weather"},
                    "model_server": {"type": "responses_api_models", "name": model_instance},
                    "max_steps": max_steps,
                }
            }
        },
    }


def environment_blocks(name: str) -> JSONObject:
    """An environment's instances (its resources server and agent) from `resources_servers/<name>/configs/<name>.yaml`;
    the agent refers to `policy_model`, which the caller supplies."""
    return load_yaml_file(find_server_dir("resources_servers", name) / "configs" / f"{name}.yaml")


def serve_resources_server(name: str, **settings: Any) -> Iterator[httpx.Client]:
    """Serve `resources_servers/<name>` alone (its block: `settings`) and yield an httpx client on it. A generator,
    so a fixture can `yield from` it and a test can `for client in serve_resources_server(...)`."""
    block = {"entrypoint": "app.py", **settings}
    with (
        serve_config({name: {"resources_servers": {name: block}}}) as (config, _servers),
        httpx.Client(base_url=config.instances[name].url(), trust_env=False, timeout=60) as client,
    ):
        yield client


def assistant_message(text: str) -> JSONObject:
    """A finished assistant message as a Responses output item, for building trajectories to verify."""
    return {
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
