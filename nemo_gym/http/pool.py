"""The HTTP pools and what every caller shares: the response type, transport errors, JSON encoding.

`HttpPool` (aiohttp, whose connector hands out keep-alive connections in constant time) carries calls to TLS model
endpoints such as OpenRouter. `make_http_client` (httpx) stays for one-off calls (head server discovery, catalogs,
preflight), where its API is the nicer one and its speed does not matter. The lean keep-alive client for plain-http
peers is `nemo_gym.http.lean_client`. All are created by their owner's lifecycle, never at import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson

if TYPE_CHECKING:
    import httpx

DEFAULT_MAX_CONNECTIONS = 2048
DEFAULT_MAX_KEEPALIVE = 64
"""Idle connections an httpx client keeps: httpcore checks every idle connection on each request."""
JSON_HEADERS = {"content-type": "application/json"}


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


class HttpCaller(Protocol):
    """What the callers need of a pool: `HttpPool` (aiohttp), `lean_client.PeerPool`, `lean_client.UpstreamPool`."""

    async def post(
        self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> HttpResponse: ...

    async def get(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> HttpResponse: ...

    async def aclose(self) -> None: ...


class RequestMethods:
    """`post` and `get` of a pool, in terms of its `request`."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        raise NotImplementedError

    async def post(
        self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> HttpResponse:
        return await self.request("POST", url, content=content, headers=headers, timeout=timeout)

    async def get(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> HttpResponse:
        return await self.request("GET", url, headers=headers, timeout=timeout)


class HttpPool(RequestMethods):
    """One aiohttp session with a keep-alive connection pool; its session opens on first use, inside the loop."""

    def __init__(
        self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, timeout: float = 600.0, connect_timeout: float = 10.0
    ) -> None:
        self.max_connections = max_connections
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            trust_env=False,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        session = self._session or self._open()
        per_call = aiohttp.ClientTimeout(total=timeout, sock_connect=self.timeout.sock_connect) if timeout else None
        try:
            async with session.request(
                method, url, data=content, headers=headers, timeout=per_call or self.timeout
            ) as response:
                body = await response.read()
                return HttpResponse(response.status, {k.lower(): v for k, v in response.headers.items()}, body)
        except TimeoutError as exc:
            raise TransportTimeout(f"no answer within the timeout ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc or 'connection closed'}") from exc

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
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_keepalive: int = DEFAULT_MAX_KEEPALIVE,
    timeout: float = 600.0,
    connect_timeout: float = 10.0,
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
