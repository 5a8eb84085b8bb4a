"""The viewer's server: the page plus a small JSON API, so even a 100k-rollout file stays quick to browse.

The browser gets one page of summaries at a time (filtered and sorted here) and one whole record when a row is
clicked. On loopback, requests must name a loopback host: a web page elsewhere cannot read the rollouts through
DNS rebinding.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request

from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.base import JSONResponse, error_body
from nemo_gym.servers.binding import is_loopback
from nemo_gym.viewer.page import render_page
from nemo_gym.viewer.records import MAX_LIMIT, SORT_KEYS, ErrorFilter, RolloutIndex
from nemo_gym.viewer.records import Query as RolloutQuery

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def build_app(index: RolloutIndex, *, host: str = "127.0.0.1") -> FastAPI:
    app = FastAPI(
        title="ng_viewer", docs_url=None, redoc_url=None, openapi_url=None, default_response_class=JSONResponse
    )
    if is_loopback(host):
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)
    page = render_page(title=f"Rollouts: {index.path.name}")
    page_headers = {
        "Content-Security-Policy": page.csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return Response(page.html, media_type="text/html; charset=utf-8", headers=page_headers)

    @app.get("/api/meta")
    def meta() -> JSONObject:
        index.refresh()
        return index.meta()

    @app.get("/api/rollouts")
    def rollouts(
        reward_min: float | None = None,
        reward_max: float | None = None,
        model: str | None = None,
        error: ErrorFilter = "all",
        search: str = "",
        sort: str = "index",
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> Any:
        if sort.removeprefix("-") not in SORT_KEYS:
            return JSONResponse(
                error_body(
                    f"sort={sort!r}: pass one of {', '.join(SORT_KEYS)}, optionally with a "
                    "leading '-' for descending order.",
                    "invalid_request",
                ),
                422,
            )
        index.refresh()
        return index.select(
            RolloutQuery(
                reward_min=reward_min,
                reward_max=reward_max,
                model=model or None,
                error=error,
                search=search,
                sort=sort,
                offset=offset,
                limit=limit,
            )
        )

    @app.get("/api/rollouts/{position}")
    def rollout(position: int) -> Any:
        try:
            return index.record(position)
        except IndexError as exc:
            return JSONResponse(error_body(str(exc), "not_found"), 404)
        except LookupError as exc:
            return JSONResponse(error_body(str(exc), "conflict"), 409)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body(f"Invalid request: {problems}", "invalid_request"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), "http_error"), exc.status_code)

    return app
