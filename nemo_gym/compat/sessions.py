"""NeMo Gym's sessions: `request.session[SESSION_ID_KEY]` identifies a rollout inside a resources server.

NeMo Gym keeps the session dict in a signed cookie (Starlette's SessionMiddleware) that agents hand back on every
call. Here the dict stays in the server, keyed by the session id, and the id travels either way: in our agents'
`X-NeMo-Gym-Session` header, or in the cookie NeMo Gym's own clients and tests carry (named
`<ServerClass>___<instance name>`, as NeMo Gym names it). A server-side store needs no secret and no `itsdangerous`,
and lets one rollout's id be the same on both paths; the price is that sessions live in one process, which our
resources servers already require.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from http.cookies import SimpleCookie
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nemo_gym.http.server_client import SESSION_HEADER

SESSION_ID_KEY = "session_id"
SESSION_HEADER_BYTES = SESSION_HEADER.lower().encode()


class SessionStore:
    """Session dicts by id, least recently used first; idle ones expire, the oldest go beyond `max_sessions`."""

    def __init__(self, ttl_s: float = 3600.0, max_sessions: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, session_id: str) -> dict[str, Any]:
        """The session dict of `session_id`, created (holding its id) when it is new or expired."""
        now = time.monotonic()
        found = self._sessions.pop(session_id, None)
        data = found[1] if found is not None else {SESSION_ID_KEY: session_id}
        self._sessions[session_id] = (now, data)
        while self._sessions:
            oldest_used, _ = next(iter(self._sessions.values()))
            if now - oldest_used <= self.ttl_s and len(self._sessions) <= self.max_sessions:
                break
            self._sessions.popitem(last=False)
        return data

    def close(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None


class SessionMiddleware:
    """Puts the rollout's session dict in `scope["session"]` (what `request.session` reads) and answers with the id:
    a `Set-Cookie` for cookie clients, the `X-NeMo-Gym-Session` header for every client. A call that came with the
    header ends its session at `/verify`, and `POST /close_session` ends it without scoring."""

    def __init__(self, app: ASGIApp, *, cookie_name: str, store: SessionStore) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from_header, session_id = self._session_id(scope)
        if from_header and scope["path"] == "/close_session" and scope["method"] == "POST":
            await _send_json(send, {"closed": self.store.close(session_id)})
            return
        scope["session"] = self.store.open(session_id)

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((SESSION_HEADER_BYTES, session_id.encode()))
                if not from_header:
                    cookie = f"{self.cookie_name}={session_id}; path=/; httponly; samesite=lax"
                    headers.append((b"set-cookie", cookie.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_session)
        finally:
            if from_header and scope["path"] == "/verify":
                self.store.close(session_id)

    def _session_id(self, scope: Scope) -> tuple[bool, str]:
        cookie_header = b""
        for name, value in scope.get("headers", []):
            if name == SESSION_HEADER_BYTES and value:
                return True, value.decode("latin-1")
            if name == b"cookie":
                cookie_header = value
        if cookie_header:
            cookies: SimpleCookie = SimpleCookie()
            cookies.load(cookie_header.decode("latin-1"))
            if self.cookie_name in cookies and cookies[self.cookie_name].value:
                return False, cookies[self.cookie_name].value
        return False, uuid.uuid4().hex


async def _send_json(send: Send, content: Any) -> None:
    body = orjson.dumps(content)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
