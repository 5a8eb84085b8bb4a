"""NeMo Gym's `judge`: calling an LLM judge through a model server, and what a failed judge call is.

A judge call goes to a model server instance (`judge_model_server` in the config), so it gets that server's retries,
fallbacks, rate limits and cost meter. A call that still fails is a `JudgeError`, and under `ng_run` the rollout it
was scoring is recorded as failed with the judge's error: never a reward of 0 that would pass for a wrong answer in
training data. NeMo Gym's `judge_failsafe` (a 200 answer with reward 0 and `_ng_failure_class`) is kept for code and
tests that call it, and the host turns its answers into the same recorded failure.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from nemo_gym.compat.server_client import ServerClient, get_response_json, raise_for_status

ResponseT = TypeVar("ResponseT", bound=BaseModel)
JUDGE_FAILED = "judge_failed"
FAILURE_CLASS_KEY = "_ng_failure_class"
FAILURE_JUDGE_ERROR_KEY = "_ng_failure_judge_error"
MAX_ERROR_CHARS = 2000


class JudgeError(Exception):
    """A judge call failed (transport, timeout, an error status after the model server's retries, an answer that is
    not the expected shape), or the judge's answer could not be read as a verdict."""


async def reraise_judge_errors(coro: Awaitable[Any]) -> Any:
    """Await `coro`; any exception it raises becomes a JudgeError naming the original."""
    try:
        return await coro
    except JudgeError:
        raise
    except Exception as exc:
        raise JudgeError(f"{type(exc).__name__}: {exc}") from exc


async def call_judge(
    server_client: ServerClient, *, server_name: str, url_path: str, json: Any, response_model: type[ResponseT]
) -> ResponseT:
    """POST `json` to the judge's model server and parse its answer as `response_model`; any failure is a
    JudgeError (an error status is reported as such, before any parsing)."""

    async def call() -> ResponseT:
        response = await server_client.post(server_name=server_name, url_path=url_path, json=json)
        await raise_for_status(response)
        return response_model.model_validate(await get_response_json(response))

    result: ResponseT = await reraise_judge_errors(call())
    return result


def judge_failsafe(verify: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a `verify` so a JudgeError answers 200 with the request, reward 0, `mask_sample` and the failure class,
    as NeMo Gym's does. Under `ng_run` such an answer is recorded as a failed rollout, not as its reward."""

    @functools.wraps(verify)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await verify(*args, **kwargs)
        except JudgeError as exc:
            body = kwargs.get("body") or next(
                (a for a in (*args, *kwargs.values()) if hasattr(a, "model_dump") and hasattr(a, "response")), None
            )
            if body is None:
                raise RuntimeError("judge_failsafe: the wrapped verify was called without a request body") from exc
            error = str(exc)[:MAX_ERROR_CHARS]
            data = {
                **body.model_dump(),
                "reward": 0.0,
                "mask_sample": True,
                "failure_kind": JUDGE_FAILED,
                "failure_reason": error,
                FAILURE_CLASS_KEY: JUDGE_FAILED,
                FAILURE_JUDGE_ERROR_KEY: error,
            }
            return JSONResponse(jsonable_encoder(data))

    return guarded
