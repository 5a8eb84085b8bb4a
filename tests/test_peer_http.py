"""The inter-server HTTP client: keeps connections alive and bounded, reads answers of every framing (length,
chunked, until close), and turns refused, dropped, malformed and slow answers into TransportError /
TransportTimeout without ever reusing a connection left in an unknown state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from nemo_gym.http import lean_client as peer_http
from nemo_gym.http.lean_client import PeerPool, UpstreamPool
from nemo_gym.http.pool import TransportError, TransportTimeout
from nemo_gym.servers.processes import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    return head + await reader.readexactly(length)


class RawServer:
    """A loopback TCP server answering each request with `answer(request, connection number)`."""

    def __init__(self, answer: Callable[[bytes, int], Awaitable[bytes | None]]) -> None:
        self.answer = answer
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    request = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests.append(request)
                reply = await self.answer(request, number)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
        finally:
            self.open_now -= 1
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *_: object) -> None:
        self.server.close()


def ok(body: bytes = b'{"ok": true}', *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        b"".join(extra),
        body,
    )


def test_connections_are_kept_alive_and_requests_carry_body_headers_and_host() -> None:
    async def answer(_: bytes, number: int) -> bytes:
        return ok(b'{"connection": %d}' % number)

    async def main() -> tuple[list[bytes], RawServer]:
        server = RawServer(answer)
        async with server as url, PeerPool() as pool:
            bodies = [
                (await pool.post(url + "/run?x=1", content=b'{"a": 1}', headers={"x-nemo-gym-session": "s1"})).content
                for _ in range(20)
            ]
        return bodies, server

    bodies, server = asyncio.run(main())
    assert set(bodies) == {b'{"connection": 1}'} and server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /run?x=1 HTTP/1.1\r\n") and first.endswith(b'\r\n\r\n{"a": 1}')
    assert b"x-nemo-gym-session: s1\r\n" in first and b"content-length: 8\r\n" in first
    assert b"host: 127.0.0.1:" in first


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ok(b"hello world"),
    ],
    ids=["chunked", "length"],
)
def test_answers_with_a_length_or_in_chunks_are_read_whole_on_one_connection(reply: bytes) -> None:
    async def answer(_: bytes, __: int) -> bytes:
        return reply

    async def main() -> tuple[list[bytes], int]:
        server = RawServer(answer)
        async with server as url, PeerPool() as pool:
            bodies = [(await pool.get(url + "/")).content for _ in range(3)]
        return bodies, server.connections

    assert asyncio.run(main()) == ([b"hello world"] * 3, 1)


def test_an_answer_without_a_length_ends_where_the_connection_does() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello world")
        await writer.drain()
        writer.close()

    async def main() -> tuple[int, bytes]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        try:
            async with PeerPool() as pool:
                response = await pool.get(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
                return response.status_code, response.content
        finally:
            server.close()

    assert asyncio.run(main()) == (200, b"hello world")


def test_a_refused_connection_is_a_transport_error_naming_the_address() -> None:
    port = free_port()

    async def main() -> None:
        async with PeerPool() as pool:
            with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
                await pool.post(f"http://127.0.0.1:{port}/run", content=b"{}")

    asyncio.run(main())


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",  # cut off mid-body
        None,  # closed without a word
        b"NOT HTTP AT ALL\r\n\r\n",  # malformed
    ],
    ids=["cut-off", "closed", "malformed"],
)
def test_an_answer_that_never_completes_is_a_transport_error_and_the_next_call_works(reply: bytes | None) -> None:
    async def main() -> tuple[int, bytes]:
        server = await asyncio.start_server(_broken_once(reply), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            async with PeerPool() as pool:
                with pytest.raises(TransportError):
                    await pool.post(url + "/x", content=b"{}")
                again = await pool.post(url + "/x", content=b"{}")
                return again.status_code, again.content
        finally:
            server.close()

    assert asyncio.run(main()) == (200, b'{"ok": true}')


def _broken_once(reply: bytes | None) -> Handler:
    """The first connection gets `reply` and is closed; later ones are answered properly."""
    seen = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        try:
            while True:
                await read_request(reader)
                if seen == 1:
                    if reply is not None:
                        writer.write(reply)
                        await writer.drain()
                    return
                writer.write(ok())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    return handle


def test_a_slow_answer_times_out_and_its_connection_is_dropped() -> None:
    async def answer(request: bytes, number: int) -> bytes:
        if number == 1:
            await asyncio.sleep(2)
        return ok()

    async def main() -> tuple[float, int]:
        server = RawServer(answer)
        async with server as url, PeerPool() as pool:
            started = asyncio.get_running_loop().time()
            with pytest.raises(TransportTimeout, match="0.2s") as timed_out:
                await pool.post(url + "/slow", content=b"{}", timeout=0.2)
            waited = asyncio.get_running_loop().time() - started
            assert timed_out.type is TransportTimeout  # the timeout fired; the slow answer never arrived
            assert (await pool.post(url + "/fast", content=b"{}")).status_code == 200
            return waited, server.connections

    waited, connections = asyncio.run(main())
    assert waited >= 0.2 and connections == 2  # a second connection: the timed-out one was not reused


def test_connection_close_and_idle_expiry_mean_a_new_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    async def answer(request: bytes, number: int) -> bytes:
        return ok(b"{}", b"connection: close\r\n") if b"/close" in request else ok()

    async def main() -> int:
        server = RawServer(answer)
        async with server as url, PeerPool() as pool:
            await pool.get(url + "/close")  # 1
            await pool.get(url + "/a")  # 2: the first was closed by the answer
            await pool.get(url + "/b")  # 2 again
            monkeypatch.setattr(peer_http, "IDLE_EXPIRY_S", 0.0)
            await pool.get(url + "/c")  # 3: the idle one expired
        return server.connections

    assert asyncio.run(main()) == 3


def test_no_more_than_max_connections_are_open_at_once() -> None:
    async def answer(_: bytes, __: int) -> bytes:
        await asyncio.sleep(0.05)
        return ok()

    async def main() -> RawServer:
        server = RawServer(answer)
        async with server as url, PeerPool(max_connections=3) as pool:
            answers = await asyncio.gather(*(pool.post(url + "/x", content=b"{}") for _ in range(12)))
            assert all(a.status_code == 200 for a in answers)
        return server

    server = asyncio.run(main())
    assert server.most_open == 3 and server.connections == 3


def test_only_plain_http_addresses_are_accepted() -> None:
    async def main() -> None:
        async with PeerPool() as pool:
            with pytest.raises(TransportError, match="not a plain http://"):
                await pool.get("https://127.0.0.1:9/x")

    asyncio.run(main())


def test_the_upstream_pool_sends_plain_http_to_the_lean_client_and_tls_to_aiohttp() -> None:
    async def answer(_: bytes, __: int) -> bytes:
        return ok()

    async def main() -> tuple[int, int]:
        server = RawServer(answer)
        async with server as url:
            pool = UpstreamPool(max_connections=4, timeout=5, connect_timeout=2)
            try:
                await pool.post(url + "/v1/chat/completions", content=b"{}")
                calls: list[str] = []

                async def fake_tls_request(method: str, target: str, **_: object) -> None:
                    calls.append(f"{method} {target}")

                pool.tls.request = fake_tls_request  # type: ignore[method-assign,assignment]
                await pool.post("https://openrouter.ai/api/v1/chat/completions", content=b"{}")
                assert calls == ["POST https://openrouter.ai/api/v1/chat/completions"]
                return server.connections, len(calls)
            finally:
                await pool.aclose()

    assert asyncio.run(main()) == (1, 1)
