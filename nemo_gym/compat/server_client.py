"""NeMo Gym's `server_utils`: the client environments call other servers with, and the server bases.

`ServerClient.post(server_name=..., url_path=..., json=...)` returns aiohttp's response, as NeMo Gym's does, so
environment code (`await raise_for_status(resp)`, `await get_response_json(resp)`, `await resp.json()`) and the mocks
in their tests work unchanged. Under `ng_run` the instance name is resolved through our registry (replicas
included), and a call to a model server made while a `/verify` is served is added to that rollout's judge meter.
"""

from __future__ import annotations

import os
import sys
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import aiohttp
import orjson
from fastapi import FastAPI
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, PrivateAttr

from nemo_gym.compat.configs import BaseRunServerInstanceConfig, BaseServerConfig
from nemo_gym.compat.global_keys import (
    NEMO_GYM_CONFIG_PATH_ENV_VAR_NAME,
    get_first_server_config_dict,
    get_global_config_dict,
)
from nemo_gym.compat.judge_meter import MODEL_CALL_PATHS, current_meter
from nemo_gym.compat.sessions import SESSION_ID_KEY, SessionMiddleware, SessionStore
from nemo_gym.servers.serving import CONFIG_ENV_VAR, serve_from_environment

__all__ = [
    "SESSION_ID_KEY",
    "BaseServer",
    "ServerClient",
    "SimpleServer",
    "get_response_json",
    "get_server_url",
    "raise_for_status",
]

MODEL_SERVER_TYPE = "responses_api_models"
DEFAULT_HEAD_SERVER_PORT = 11000
MAX_NUM_TRIES = 3


async def raise_for_status(response: aiohttp.ClientResponse) -> None:
    """Raise aiohttp's ClientResponseError for an error status; the body is read first and kept on the error as
    `response_content`, so the message of the server that refused is not lost."""
    if response.ok:
        return
    content = await response.read()
    try:
        response.raise_for_status()
    except aiohttp.ClientResponseError as exc:
        exc.response_content = content  # type: ignore[attr-defined]
        exc.message = f"{exc.message}: {content[:2000].decode('utf-8', 'replace')}"
        raise


async def get_response_json(response: aiohttp.ClientResponse) -> Any:
    return orjson.loads(await response.read())


def get_server_url(server_name: str) -> str:
    block = get_first_server_config_dict(get_global_config_dict(), server_name)
    return f"http://{block['host']}:{block['port']}"


class ServerClient(BaseModel):
    """Calls the servers of the running configuration by instance name."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    head_server_config: BaseServerConfig | None = None
    global_config_dict: DictConfig | None = None
    _resolve: Callable[[str], str] | None = PrivateAttr(default=None)
    _session: aiohttp.ClientSession | None = PrivateAttr(default=None)

    @classmethod
    def load_head_server_config(cls) -> BaseServerConfig:
        head = get_global_config_dict().get("head_server") or {}
        return BaseServerConfig(host=head.get("host", "127.0.0.1"), port=head.get("port", DEFAULT_HEAD_SERVER_PORT))

    @classmethod
    def load_from_global_config(cls, head_server_config: BaseServerConfig | None = None) -> ServerClient:
        return cls(
            head_server_config=head_server_config or cls.load_head_server_config(),
            global_config_dict=get_global_config_dict(),
        )

    def use_resolver(self, resolve: Callable[[str], str]) -> None:
        """Resolve instance names to base URLs with `resolve` (the host passes our registry's, with replicas)."""
        self._resolve = resolve

    def base_url(self, server_name: str) -> str:
        if self._resolve is not None:
            return self._resolve(server_name)
        config = self.global_config_dict if self.global_config_dict is not None else get_global_config_dict()
        block = get_first_server_config_dict(config, server_name)
        return f"http://{block['host']}:{block['port']}"

    def server_type(self, server_name: str) -> str | None:
        config = self.global_config_dict if self.global_config_dict is not None else get_global_config_dict()
        block = config.get(server_name) if config is not None else None
        return next(iter(block), None) if isinstance(block, DictConfig | dict) else None

    async def request(self, server_name: str, url_path: str, method: str, **kwargs: Any) -> aiohttp.ClientResponse:
        body = kwargs.pop("json", None)
        if isinstance(body, BaseModel):
            body = body.model_dump(exclude_unset=True, mode="json")
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            kwargs["headers"] = {"Content-Type": "application/json", **(kwargs.get("headers") or {})}
        if self._session is None or self._session.closed:
            # One pooled session per process, no cookie jar: callers pass `cookies=` as NeMo Gym's agents do.
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=None)
            )
        url = self.base_url(server_name) + url_path
        meter = current_meter.get() if url_path in MODEL_CALL_PATHS else None
        if meter is not None and self.server_type(server_name) not in (None, MODEL_SERVER_TYPE):
            meter = None
        try:
            response = await self._session.request(method, url, **kwargs)
        except (TimeoutError, aiohttp.ClientError) as exc:
            if meter is not None:
                meter.add_failure(f"{server_name}{url_path} unreachable: {type(exc).__name__}: {exc}")
            raise
        if meter is not None:
            meter.add_answer(response.status, await response.read())  # the body stays cached for the caller
        return response

    async def get(self, server_name: str, url_path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request(server_name, url_path, "GET", **kwargs)

    async def post(self, server_name: str, url_path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request(server_name, url_path, "POST", **kwargs)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class BaseServer(BaseModel):
    """A NeMo Gym server: a pydantic model holding its config."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    config: BaseRunServerInstanceConfig
    ray_enabled: ClassVar[bool] = False
    """Declared here, as NeMo Gym's base declares it, so a server's `ray_enabled = ...` is a class setting."""

    @classmethod
    def load_config_from_global_config(cls) -> BaseRunServerInstanceConfig:
        name = os.environ.get(NEMO_GYM_CONFIG_PATH_ENV_VAR_NAME, "")
        block = get_first_server_config_dict(get_global_config_dict(), name)
        config_class = cls.model_fields["config"].annotation
        assert isinstance(config_class, type)
        container = OmegaConf.to_container(block, resolve=True) if isinstance(block, DictConfig) else dict(block)
        config: BaseRunServerInstanceConfig = config_class.model_validate({**container, "name": name})  # type: ignore[dict-item]
        return config


class SimpleServer(BaseServer):
    """A server with a FastAPI app (`setup_webserver`) and a `server_client` for calling the others."""

    server_client: ServerClient
    _session_store: SessionStore = PrivateAttr(default_factory=SessionStore)

    @abstractmethod
    def setup_webserver(self) -> FastAPI: ...

    def get_session_middleware_key(self) -> str:
        return f"{type(self).__name__}___{self.config.name}"

    def setup_session_middleware(self, app: FastAPI) -> None:
        if getattr(app.state, "nemo_gym_session_middleware_installed", False):
            return
        app.state.nemo_gym_session_middleware_installed = True
        ttl = getattr(self.config, "session_ttl_s", None)
        most = getattr(self.config, "max_sessions", None)
        self._session_store = SessionStore(ttl_s=ttl or 3600.0, max_sessions=most or 100_000)
        app.add_middleware(
            SessionMiddleware,
            cookie_name=self.get_session_middleware_key(),
            store=self._session_store,
        )

    @classmethod
    def run_webserver(cls) -> None:
        """Start this server the way `python app.py` does in NeMo Gym: its instance comes from `ng_run`, which
        starts server folders itself, so run it with `ng_run "+config_paths=[...]"`."""
        name = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(NEMO_GYM_CONFIG_PATH_ENV_VAR_NAME)
        if CONFIG_ENV_VAR not in os.environ or not name:
            sys.exit(
                f'{cls.__name__} is a NeMo Gym server: start it with ng_run, e.g. ng_run "+config_paths=['
                "responses_api_models/openai_model/configs/openai_model.yaml, "
                'resources_servers/<folder>/configs/<folder>.yaml]"'
            )
        serve_from_environment(name)
