"""The pooled HTTP clients: calls between servers and to model endpoints, and finding an instance by name.

Hot paths (every inter-server call, every upstream model call) go through `HttpPool`, an aiohttp session: its
connector hands out keep-alive connections in constant time. httpx's pool checks every idle connection's socket on
each request, which made it the largest CPU cost of a rollout (profiled: ~45% of the agent's CPU at 16 in flight).
`make_http_client` (httpx) stays for one-off calls (head server discovery, catalogs, preflight), where its API is the
nicer one and its speed does not matter. Both are created by their owner's lifecycle, never at import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from nemo_gym.config import GlobalConfig

if TYPE_CHECKING:
    import httpx

SESSION_HEADER = "X-NeMo-Gym-Session"
DEFAULT_MAX_CONNECTIONS = 2048
DEFAULT_MAX_KEEPALIVE = 64
"""Idle connections an httpx client keeps: httpcore checks every idle connection on each request."""
JSON_HEADERS = {"content-type": "application/json"}


class ServerCallError(Exception):
    """Another server answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class TransportError(Exception):
    """No answer: the connection failed or dropped before a whole response arrived."""


class TransportTimeout(TransportError):
    """No whole answer within the timeout."""


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: Mapping[str, str]
    """Lower-case names."""
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class HttpPool:
    """One aiohttp session with a keep-alive connection pool; its session opens on first use, inside the loop."""

    def __init__(self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, timeout: float = 600.0,
                 connect_timeout: float = 10.0) -> None:
        self.max_connections = max_connections
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, keepalive_timeout=60,
                                         ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, trust_env=False,
                                              auto_decompress=True, skip_auto_headers=("User-Agent",))
        return self._session

    async def request(self, method: str, url: str, *, content: bytes | None = None,
                      headers: Mapping[str, str] | None = None, timeout: float | None = None) -> HttpResponse:
        session = self._session or self._open()
        per_call = aiohttp.ClientTimeout(total=timeout, sock_connect=self.timeout.sock_connect) if timeout else None
        try:
            async with session.request(method, url, data=content, headers=headers,
                                       timeout=per_call or self.timeout) as response:
                body = await response.read()
                return HttpResponse(response.status, {k.lower(): v for k, v in response.headers.items()}, body)
        except TimeoutError as exc:
            raise TransportTimeout(f"no answer within the timeout ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc or 'connection closed'}") from exc

    async def post(self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None,
                   timeout: float | None = None) -> HttpResponse:
        return await self.request("POST", url, content=content, headers=headers, timeout=timeout)

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None,
                  timeout: float | None = None) -> HttpResponse:
        return await self.request("GET", url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            await asyncio.sleep(0)  # let the connector's transports close before the loop ends

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def make_http_client(
    *, max_connections: int = DEFAULT_MAX_CONNECTIONS, max_keepalive: int = DEFAULT_MAX_KEEPALIVE,
    timeout: float = 600.0, connect_timeout: float = 10.0,
) -> httpx.AsyncClient:
    """An httpx client for one-off calls, with real connect and read timeouts (imported here: servers that make
    no such calls don't carry the module)."""
    import httpx

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

    def __init__(self, registry: Mapping[str, InstanceAddress], http: HttpPool) -> None:
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
            response = await self.http.post(url, content=dumps(payload),
                                            headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS)
        except TransportError as exc:
            raise ServerCallError(f"Cannot reach '{name}' at {url}: {type(exc).__name__}: {exc}") from exc
        return decode_response(name, url, response)


def decode_response(name: str, url: str, response: HttpResponse) -> Any:
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
