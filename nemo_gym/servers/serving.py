"""Serving an app: one instance's process (workers sharing a port), a ready line flushed at once, answers written in
one system call, and a server in a thread for in-process use.

ng_run hands the resolved global config (with assigned ports) to each server process in the NEMO_GYM_GLOBAL_CONFIG
environment variable, so secrets never appear on a command line or on disk.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.secrets import install_log_redaction
from nemo_gym.config.types import GlobalConfig
from nemo_gym.servers.base import KEEP_ALIVE_S, BaseServer, StartupError
from nemo_gym.servers.gc_tuning import tune_for_many_in_flight
from nemo_gym.servers.loading import load_server_class
from nemo_gym.servers.processes import free_port

WORKER_ENV_VAR = "NEMO_GYM_WORKER"
"""Which of an instance's `num_workers` processes this is (1-based), set by ng_run."""
REPLICA_ENV_VAR = "NEMO_GYM_REPLICA"
"""Which of an instance's `num_replicas` this process serves (1-based), set by ng_run."""
PORT_ENV_VAR = "NEMO_GYM_PORT"
"""The port of this replica when it is not the instance's first (each replica has its own address)."""
CONFIG_ENV_VAR = "NEMO_GYM_GLOBAL_CONFIG"
"""The resolved global config, as JSON, for a server process that ng_run starts."""


def serve_from_environment(name: str) -> None:
    """Serve instance `name` of the global config that ng_run put in CONFIG_ENV_VAR (removed from the environment
    at once, so the server's own children never inherit it)."""
    payload = json.loads(os.environ.pop(CONFIG_ENV_VAR))
    global_config = GlobalConfig(data=payload["data"], origins=payload["origins"])
    spec = global_config.instances[name]
    server_cls = load_server_class(spec)
    if (directory := server_cls.working_directory(spec)) is not None:
        os.chdir(directory)  # this process serves only this instance
    serve_instance(server_cls, name, global_config)


def serve_instance(server_cls: type[BaseServer], name: str, global_config: GlobalConfig) -> None:
    """Run one instance until SIGINT/SIGTERM; prints a flushed ready line once it accepts connections."""
    server = server_cls.from_global_config(name, global_config)
    if os.environ.get(PORT_ENV_VAR):
        server.config.port = int(os.environ[PORT_ENV_VAR])
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    install_log_redaction(server.redactor)
    logging.getLogger("uvicorn.error").addFilter(_StartupErrorFilter())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per inter-server call is noise
    config = server.config
    if config.port is None:
        raise ConfigError(f"Instance '{name}' has no port; ng_run assigns one, or set `port:` in its config.")
    spec = global_config.instances[name]
    problem = cannot_listen(
        config.host, config.port, f"{name}.{spec.server_type}.{spec.impl}", shared=config.num_workers > 1
    )
    if problem is not None:
        raise ConfigError(
            f"Instance '{name}' (from {spec.origin}) cannot listen on {config.host}:{config.port}: {problem}"
        )
    worker = os.environ.get(WORKER_ENV_VAR)
    replica = os.environ.get(REPLICA_ENV_VAR)
    if replica and config.num_replicas > 1:
        name = f"{name}[{replica}]"
    listening = _shared_socket(config.host, config.port) if config.num_workers > 1 else None
    uv_config = uvicorn.Config(
        server.build_app(),
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        loop="auto",
        http=_CoalescingHttpToolsProtocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=4096,
        proxy_headers=False,  # no proxy in front; its per-request header check is pure cost
    )
    label = f"{name} (worker {worker} of {config.num_workers})" if listening is not None else name
    uv_server = ReadyReportingServer(uv_config, ready_line=f"{label} ready at http://{config.host}:{config.port}")
    tune_for_many_in_flight()
    uv_server.run(sockets=[listening] if listening is not None else None)
    if not uv_server.started:
        sys.exit(1)


def _shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket that the instance's other workers bind too; the kernel spreads connections over them."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def cannot_listen(host: str, port: int, key: str, *, shared: bool = False) -> str | None:
    """Why a server could not listen on host:port and what to do about it (`key` is the instance's config path),
    or None when it can. uvicorn's own bind error names neither the instance nor the fix."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        if shared:  # the instance's other workers may hold the port already
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror as exc:
            return f"unknown host ({exc.strerror}). Set {key}.host to an address of this machine, e.g. 127.0.0.1."
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    "address already in use. Another process (maybe another ng_run) holds that port: stop it, "
                    f"or give this instance another port with +{key}.port=<port>, or remove `port:` from its "
                    "block so ng_run picks a free one."
                )
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{exc.strerror}. Set {key}.host to an address of this machine, e.g. 127.0.0.1."
            return f"{exc.strerror or exc}. Check {key}.host and {key}.port."
    return None


class _CoalescedWrites:
    """A transport whose writes within one step of the event loop go out as one: uvicorn writes a response's
    head and body separately, which is two system calls and two TCP segments (and two wake-ups of the reader)
    for every answer. Everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `_CoalescedWrites` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescedWrites(transport))  # type: ignore[arg-type]


class _StartupErrorFilter(logging.Filter):
    """uvicorn logs a failed start-up as a whole traceback; a StartupError is a message for the user, so keep
    only that message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        marker = f"{StartupError.__module__}.{StartupError.__qualname__}: "
        if marker in message:
            record.msg, record.args = "start-up failed: " + message.rsplit(marker, 1)[1].strip(), None
        return True


class ReadyReportingServer(uvicorn.Server):
    """Prints one flushed line once the socket is listening, so scripts and ng_run can wait for it (every
    long-running server command: servers, ng_viewer, the emulator)."""

    def __init__(self, config: uvicorn.Config, *, ready_line: str) -> None:
        super().__init__(config)
        self.ready_line = ready_line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.ready_line, flush=True)

    def run_until_signalled(self) -> bool:
        """Serve until Ctrl-C or SIGTERM, then exit cleanly; False when the server never started. uvicorn re-raises
        the signal it stopped on once it has restored the previous handlers: these no-op ones make a requested stop
        exit 0 (and SIGINT work even when a shell started the command with it ignored)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        self.run()
        return bool(self.started)


@contextmanager
def serve_in_thread(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout_s: float = 60.0,
    keep_alive_s: float = KEEP_ALIVE_S,
) -> Iterator[str]:
    """Run `app` with uvicorn (lifespan included) in a daemon thread until the block exits; yields its URL.

    Used for ng_run's head server and for tests that need a real server on loopback. Signals stay with the
    main thread (uvicorn installs no handlers outside it)."""
    port = free_port(host) if port is None else port
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type]  # a float works; uvicorn's hint says int
        )
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"The server for {host}:{port} failed to start (is the port in use?).")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"The server for {host}:{port} did not start within {startup_timeout_s}s.")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
