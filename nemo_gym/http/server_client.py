"""Calling a server instance by name: its replicas from the config or the head server, one picked per call, the JSON
answer decoded.

Calls between our own servers run on `nemo_gym.http.lean_client.PeerPool`; replica choice is `nemo_gym.http.replicas`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from nemo_gym.config.types import GlobalConfig
from nemo_gym.http.replicas import ReplicaSet, SessionRoutes

if TYPE_CHECKING:
    pass
from nemo_gym.http.pool import JSON_HEADERS, HttpCaller, HttpResponse, TransportError, dumps

SESSION_HEADER = "X-NeMo-Gym-Session"
UNAVAILABLE_ERROR = "replica_unavailable"
"""The error type of a 503 that means: a server replica this call needed went away; redoing the rollout may work."""
OUTAGE_FLAG = "outage"
"""Set (true) in an error body when the system failed, not the request: a server or the upstream was down or
overloaded past its retries. Servers pass it on, so a collector can wait for the system instead of recording it."""
MODEL_NOT_SERVED = "model_not_served"
"""The error `code` of a model server's 400 for a request naming a model it does not serve (agents pass it on)."""
SPENT_KEY = "spent"
"""In a failed `/run`'s `error` object: the usage (with USD `cost`) its model calls had spent before it failed."""


class ServerCallError(Exception):
    """Another server answered with an error, or could not be reached."""

    def __init__(
        self, message: str, *, status_code: int | None = None, body: Any = None, unavailable: bool = False
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.unavailable = unavailable
        """No replica that could serve the call answered (it died or is restarting): redoing the rollout may work."""

    @property
    def detail(self) -> dict[str, Any]:
        """The answer's `error` object (empty when it had none)."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error if isinstance(error, dict) else {}

    @property
    def outage(self) -> bool:
        """The system failed, not this request: a server unreachable or restarting, or the upstream down."""
        detail = self.detail
        return self.unavailable or detail.get("type") == UNAVAILABLE_ERROR or detail.get(OUTAGE_FLAG) is True


@dataclass(frozen=True)
class InstanceAddress:
    name: str
    server_type: str
    impl: str
    url: str
    """The first replica's address (the only one unless the instance runs several replicas)."""
    replicas: tuple[str, ...] = ()
    """Every replica's address, when the head server lists them."""

    @property
    def urls(self) -> tuple[str, ...]:
        return self.replicas or (self.url,)


def registry_from_config(config: GlobalConfig) -> dict[str, InstanceAddress]:
    return {
        name: InstanceAddress(name, spec.server_type, spec.impl, spec.url())
        for name, spec in config.instances.items()
        if spec.config.get("port") is not None
    }


def registry_from_head(payload: Mapping[str, Any]) -> dict[str, InstanceAddress]:
    registry = {}
    for name, entry in payload.get("instances", {}).items():
        replicas = tuple(r["url"] for r in entry.get("replicas") or [] if r.get("url"))
        url = entry.get("url") or (replicas[0] if replicas else None)
        if url:
            registry[name] = InstanceAddress(name, entry["server_type"], entry["impl"], url, replicas)
    return registry


class ServerClient:
    """Calls servers by instance name over one shared connection pool, spread over each instance's replicas.

    With `head_url`, the list of instances and replicas comes from ng_run's head server, fetched before the first
    call, again every `refresh_interval_s` and whenever a replica cannot be reached (a replica Ray restarted has a
    new address). A call that cannot reach a replica is tried on another one unless it belongs to a session, whose
    state lives only in the replica that opened it; then it fails as `unavailable` so the rollout can be redone.
    """

    def __init__(
        self,
        registry: Mapping[str, InstanceAddress],
        http: HttpCaller,
        *,
        head_url: str | None = None,
        refresh_interval_s: float = 5.0,
    ) -> None:
        self.registry = dict(registry)
        self.http = http
        self.head_url = head_url
        self.refresh_interval_s = refresh_interval_s
        self.sessions = SessionRoutes()
        self._replicas: dict[str, tuple[InstanceAddress, ReplicaSet]] = {}
        self._refreshed_at: float | None = None
        self._refresh: asyncio.Task[None] | None = None

    def address(self, name: str) -> InstanceAddress:
        try:
            return self.registry[name]
        except KeyError:
            known = ", ".join(sorted(self.registry)) or "none"
            raise ServerCallError(f"No server instance named '{name}'. Running instances: {known}.") from None

    def replicas(self, name: str) -> ReplicaSet:
        address = self.address(name)
        known = self._replicas.get(name)
        if known is not None and known[0] is address:  # the registry entry has not changed since
            return known[1]
        replica_set = known[1] if known is not None else ReplicaSet()
        replica_set.update(address.urls)
        self._replicas[name] = (address, replica_set)
        return replica_set

    async def post(self, name: str, path: str, payload: Any, *, headers: Mapping[str, str] | None = None) -> Any:
        """POST JSON to `<instance>/<path>` on one of its replicas and return the decoded JSON body, or raise
        ServerCallError."""
        if self.head_url is not None:
            await self._keep_fresh()
        content = dumps(payload)
        all_headers = {**JSON_HEADERS, **headers} if headers else JSON_HEADERS
        session = headers.get(SESSION_HEADER) if headers else None
        pinned = self.sessions.get(session) if session else None
        tried: list[str] = []
        while True:
            replica_set = self.replicas(name)
            replica = replica_set.get(pinned) if pinned else replica_set.pick(avoid=tried)
            if replica is None:  # the pinned replica is gone from the registry, or every replica was tried
                raise self._unreachable(name, path, tried or [pinned or "?"], session)
            url = replica.url + path
            replica.in_flight += 1
            try:
                response = await self.http.post(url, content=content, headers=all_headers)
            except TransportError as exc:
                replica_set.mark_down(replica.url)
                tried.append(replica.url)
                self._schedule_refresh(force=True)
                if pinned or len(tried) >= len(replica_set.replicas):
                    raise self._unreachable(name, path, tried, session, exc) from exc
                continue
            finally:
                replica.in_flight -= 1
            body = decode_response(name, url, response)
            self._route_sessions(path, body, session, replica.url)
            return body

    def _route_sessions(self, path: str, body: Any, session: str | None, url: str) -> None:
        if path == "/seed_session" and isinstance(body, dict) and isinstance(body.get("session_id"), str):
            self.sessions.remember(body["session_id"], url)
        elif session and path in ("/verify", "/close_session"):
            self.sessions.forget(session)

    def _unreachable(
        self, name: str, path: str, tried: list[str], session: str | None, exc: Exception | None = None
    ) -> ServerCallError:
        cause = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        if session:
            return ServerCallError(
                f"Cannot reach the replica of '{name}' that holds session {session} ({tried[-1]}{path}){cause}. "
                "The session's state was lost with it; the rollout must start again.",
                unavailable=True,
            )
        where = ", ".join(u + path for u in tried)
        return ServerCallError(f"Cannot reach '{name}' at {where}{cause}", unavailable=True)

    # ------------------------------------------------------------------ the registry from the head server

    async def _keep_fresh(self) -> None:
        if self._refreshed_at is None:  # every call before the first listing arrives waits for that one fetch
            self._schedule_refresh()
            assert self._refresh is not None
            await asyncio.shield(self._refresh)
        elif time.monotonic() - self._refreshed_at > self.refresh_interval_s:
            self._schedule_refresh()

    def _schedule_refresh(self, *, force: bool = False) -> None:
        if self.head_url is None or (self._refresh is not None and not self._refresh.done()):
            return
        if force or self._refreshed_at is None or time.monotonic() - self._refreshed_at > self.refresh_interval_s:
            self._refresh = asyncio.get_running_loop().create_task(self.refresh())

    async def refresh(self) -> None:
        """Reload instances and replicas from the head server (kept as they were if it cannot be reached)."""
        if self.head_url is None:
            return
        try:
            response = await self.http.get(self.head_url + "/instances", timeout=5.0)
            payload = orjson.loads(response.content) if response.status_code == 200 else None
        except (TransportError, orjson.JSONDecodeError):
            return
        finally:
            self._refreshed_at = time.monotonic()
        if isinstance(payload, dict):
            self.registry.update(registry_from_head(payload))

    async def aclose(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh


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
