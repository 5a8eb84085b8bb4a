"""The pooled inter-server HTTP client: find an instance by name and call it.

One `httpx.AsyncClient` per process (created by the owner's lifecycle, never at import) keeps connections alive
between the collector, agents, resources servers and model servers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from nemo_gym.config import GlobalConfig

SESSION_HEADER = "X-NeMo-Gym-Session"
DEFAULT_MAX_CONNECTIONS = 2048
DEFAULT_MAX_KEEPALIVE = 64
"""Idle connections kept per client. httpcore checks every idle connection on each request, so a pool that keeps
thousands idle spends more time in syscalls than in work (measured: 20 vs 55 rollouts/s in bench/fault_run.py)."""


class ServerCallError(Exception):
    """Another server answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


def make_http_client(
    *, max_connections: int = DEFAULT_MAX_CONNECTIONS, max_keepalive: int = DEFAULT_MAX_KEEPALIVE,
    timeout: float = 600.0, connect_timeout: float = 10.0,
) -> httpx.AsyncClient:
    """A keep-alive pool sized for thousands of concurrent rollouts, with real connect and read timeouts."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_keepalive, keepalive_expiry=60
        ),
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        trust_env=False,
    )


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True)
class InstanceAddress:
    name: str
    server_type: str
    impl: str
    url: str


def registry_from_config(config: GlobalConfig) -> dict[str, InstanceAddress]:
    return {
        name: InstanceAddress(name, spec.server_type, spec.impl, spec.url())
        for name, spec in config.instances.items()
        if spec.config.get("port") is not None
    }


def registry_from_head(payload: Mapping[str, Any]) -> dict[str, InstanceAddress]:
    return {
        name: InstanceAddress(name, entry["server_type"], entry["impl"], entry["url"])
        for name, entry in payload.get("instances", {}).items()
    }


class ServerClient:
    """Calls servers by instance name over one shared connection pool."""

    def __init__(self, registry: Mapping[str, InstanceAddress], http: httpx.AsyncClient) -> None:
        self.registry = dict(registry)
        self.http = http

    def address(self, name: str) -> InstanceAddress:
        try:
            return self.registry[name]
        except KeyError:
            known = ", ".join(sorted(self.registry)) or "none"
            raise ServerCallError(f"No server instance named '{name}'. Running instances: {known}.") from None

    async def post(
        self, name: str, path: str, payload: Any, *, headers: Mapping[str, str] | None = None
    ) -> Any:
        """POST JSON to `<instance>/<path>` and return the decoded JSON body, or raise ServerCallError."""
        url = self.address(name).url + path
        try:
            response = await self.http.post(
                url, content=dumps(payload), headers={"content-type": "application/json", **(headers or {})}
            )
        except httpx.HTTPError as exc:
            raise ServerCallError(f"Cannot reach '{name}' at {url}: {type(exc).__name__}: {exc}") from exc
        return decode_response(name, url, response)


def decode_response(name: str, url: str, response: httpx.Response) -> Any:
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        snippet = response.text[:300]
        raise ServerCallError(
            f"'{name}' answered {url} with HTTP {response.status_code} and a body that is not JSON: {snippet!r}. "
            f"Every NeMo Gym server answers JSON: check that this URL is the '{name}' server and look in its log.",
            status_code=response.status_code,
        ) from None
    if response.status_code >= 400:
        detail = body.get("error", body) if isinstance(body, dict) else body
        message = detail.get("message", detail) if isinstance(detail, dict) else detail
        raise ServerCallError(
            f"'{name}' answered {url} with HTTP {response.status_code}: {message}",
            status_code=response.status_code,
            body=body,
        )
    return body
