"""A minimal OpenAI-compatible upstream for benchmarks: the StubUpstream's "model" behind a bare ASGI app.

FastAPI's routing and validation would make the stub, not the pipeline, the bottleneck; a raw ASGI callable on
uvicorn (uvloop + httptools) serves thousands of requests per second on one core, and its own ceiling is measured
by the benchmark so the pipeline's figures can be read against it.

    python -m nemo_gym.testing.fast_upstream --port 18000 [--latency-ms 500]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from nemo_gym.testing.stub_upstream import StubUpstream

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


class FastUpstream:
    """`POST /v1/chat/completions` and `GET /v1/models`, answered after `latency_s`; nothing is recorded."""

    def __init__(self, latency_s: float = 0.0, model_label: str = "stub/weather-model") -> None:
        self.latency_s = latency_s
        self.model = StubUpstream(model_label=model_label)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "POST" and path.endswith("/chat/completions"):
            body = orjson.loads(await read_body(receive))
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            await respond(send, 200, orjson.dumps(self.model._chat_answer(body)))
        elif method == "GET" and path.endswith("/models"):
            await respond(send, 200, orjson.dumps({"object": "list", "data": [{"id": self.model.model_label}]}))
        else:
            await respond(send, 404, b'{"error": {"message": "not found", "code": 404}}')


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """A bare ASGI app's lifespan: nothing to start or stop, so each event is acknowledged until shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    serve_fast(FastUpstream(args.latency_ms / 1000), args.port)


def serve_fast(app: Any, port: int) -> None:
    """Serve a benchmark's upstream on loopback the way the framework's own servers run (uvloop, httptools, long
    keep-alive, a deep backlog), so what is measured is not the stub's server."""
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=75,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
