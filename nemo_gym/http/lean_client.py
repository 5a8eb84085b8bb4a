"""A lean HTTP/1.1 keep-alive client for the calls between NeMo Gym's own servers.

Every rollout makes about eight calls between our servers (collector -> agent -> model server and resources
server). Profiled at 1,000 rollouts in flight, aiohttp's request machinery (request and response objects, header
multidicts, payload registry, tracing hooks, per-call timeout contexts) was close to half of the agent's CPU, the
busiest process. These calls are all alike: a small request with a JSON body to a server we wrote, a JSON answer
with a content length, on a connection kept open. So they go through this client: one asyncio protocol per
connection, httptools (uvicorn's own parser) for the answer, a plain list of idle connections per address.

Calls to model endpoints (TLS, proxies, compression, arbitrary servers) stay on aiohttp (`client.HttpPool`), and
one-off calls on httpx. Same interface and errors as `HttpPool`: `TransportError` when no whole answer arrived,
`TransportTimeout` when it did not arrive in time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools

from nemo_gym.http.pool import HttpPool, HttpResponse, RequestMethods, TransportError, TransportTimeout

IDLE_EXPIRY_S = 60.0
"""Idle connections older than this are closed, not reused: shorter than the servers' keep-alive (75 s), so a
server never closes a connection this client is about to send on."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: sends one request at a time and parses its answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._headers_done = False
        self._keep_alive = True

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"malformed HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if (
            exc is None
            and self._parser is not None
            and self._headers_done
            and not ("content-length" in self._headers or "transfer-encoding" in self._headers)
        ):
            self._keep_alive = False  # an answer without a length ends where the connection does
            self.on_message_complete()
            return
        self._fail(TransportError(f"connection closed before a whole answer arrived{f': {exc}' if exc else ''}"))

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._parser is not None
        self._keep_alive = self._keep_alive and self._parser.should_keep_alive()
        response = HttpResponse(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._parser = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # ------------------------------------------------------------------ use

    async def exchange(self, request: bytes, timeout: float) -> HttpResponse:
        """Send one request and wait for its whole answer."""
        assert self.transport is not None
        self._headers, self._body, self._headers_done, self._keep_alive = {}, [], False, True
        self._parser = httptools.HttpResponseParser(self)
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, self._time_out, waiter, timeout)
        self.transport.write(request)
        try:
            answer: HttpResponse = await waiter
            return answer
        finally:
            timer.cancel()

    @property
    def reusable(self) -> bool:
        return self._keep_alive and not self.closed and self._parser is None

    def _time_out(self, waiter: asyncio.Future[HttpResponse], timeout: float) -> None:
        if not waiter.done():
            waiter.set_exception(TransportTimeout(f"no whole answer within {timeout:g}s"))
        self.close()

    def _fail(self, error: TransportError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class PeerPool(RequestMethods):
    """Keep-alive connections to NeMo Gym servers (plain `http://` addresses), at most `max_connections` open."""

    def __init__(self, *, max_connections: int = 2048, timeout: float = 600.0, connect_timeout: float = 10.0) -> None:
        self.max_connections = max_connections
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._open: set[_Connection] = set()

    def _target(self, url: str) -> tuple[tuple[str, int], bytes]:
        """(host, port) and the request line's start for `url`, parsed once per URL."""
        known = self._targets.get(url)
        if known is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise TransportError(f"{url} is not a plain http:// address of a NeMo Gym server")
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host_header = parts.netloc.rsplit("@", 1)[-1]
            known = ((parts.hostname, parts.port or 80), f" {path} HTTP/1.1\r\nhost: {host_header}\r\n".encode())
            if len(self._targets) < 10_000:
                self._targets[url] = known
        return known

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        address, request_line = self._target(url)
        head = [method.encode(), request_line]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(b"content-length: %d\r\n\r\n" % len(content or b""))
        request = b"".join(head) + (content or b"")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        async with self._slots:
            connection = await self._connection(address)
            try:
                response = await connection.exchange(request, timeout or self.timeout)
            except BaseException:
                connection.close()  # an unfinished exchange leaves the connection in an unknown state
                self._open.discard(connection)
                raise
            if connection.reusable:
                connection.idle_since = time.monotonic()
                self._idle.setdefault(address, []).append(connection)
            else:
                connection.close()
                self._open.discard(connection)
            return response

    async def _connection(self, address: tuple[str, int]) -> _Connection:
        idle = self._idle.get(address)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable and now - connection.idle_since < IDLE_EXPIRY_S:
                return connection
            connection.close()
            self._open.discard(connection)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(lambda: _Connection(loop), *address)
        except TimeoutError as exc:
            raise TransportTimeout(
                f"cannot connect to {address[0]}:{address[1]} within {self.connect_timeout:g}s"
            ) from exc
        except OSError as exc:
            raise TransportError(f"cannot connect to {address[0]}:{address[1]}: {exc.strerror or exc}") from exc
        self._open.add(connection)
        return connection

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)

    async def __aenter__(self) -> PeerPool:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class UpstreamPool(RequestMethods):
    """Calls to model endpoints: plain `http://` ones (a local vLLM or llama.cpp server, the emulator) on a
    `PeerPool`, everything else (TLS, e.g. OpenRouter) on aiohttp's `HttpPool`."""

    def __init__(self, *, max_connections: int, timeout: float, connect_timeout: float) -> None:
        self.plain = PeerPool(max_connections=max_connections, timeout=timeout, connect_timeout=connect_timeout)
        self.tls = HttpPool(max_connections=max_connections, timeout=timeout, connect_timeout=connect_timeout)

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        pool = self.plain if url.startswith("http://") else self.tls
        return await pool.request(method, url, content=content, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self.plain.aclose()
        await self.tls.aclose()
