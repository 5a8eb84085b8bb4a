"""Calling a model endpoint (OpenRouter or any OpenAI-compatible URL): auth, timeouts, and what errors mean.

Errors are translated into messages that say what went wrong and what to check, because "HTTP 401" alone sends
users to the wrong place. Nothing here ever puts the API key into a message.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

import orjson

from nemo_gym.config.secrets import REDACTED
from nemo_gym.http.pool import HttpCaller, HttpResponse, TransportError, TransportTimeout
from nemo_gym.protocol.types import JSONObject

UpstreamAPI = Literal["chat_completions", "responses"]


RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
"""Worth another attempt: rate limits, timeouts, provider and gateway failures. 400/401/402/403/404/413/422 are
not: the same request would fail the same way."""


def is_openrouter(base_url: str) -> bool:
    """openrouter.ai, or anything serving OpenRouter's `/api/v1` path (a proxy, the offline emulator)."""
    parsed = urlparse(base_url)
    return (parsed.hostname or "").endswith("openrouter.ai") or parsed.path.rstrip("/").endswith("/api/v1")


def default_api(base_url: str) -> UpstreamAPI:
    """OpenRouter's complete API is Chat Completions (its Responses API is a stateless beta in 2025);
    api.openai.com is best served through Responses; other OpenAI-compatible servers mostly speak Chat."""
    host = urlparse(base_url).hostname or ""
    return "responses" if host == "api.openai.com" else "chat_completions"


class UpstreamError(Exception):
    """The upstream refused or failed a call; `status_code` is what the model server answers with."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        upstream_status: int | None = None,
        body: Any = None,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
        kind: str = "http",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        """http (an answer with an error), timeout, connection, or invalid_body."""
        self.status_code = status_code
        self.upstream_status = upstream_status
        self.body = body
        self.retryable = (upstream_status in RETRYABLE_STATUSES) if retryable is None else retryable
        self.retry_after_s = retry_after_s

    @property
    def outage(self) -> bool:
        """The endpoint is down or overloaded (no connection, no answer in time, 5xx, 429) rather than refusing this
        request: a collection waits for it to come back instead of recording the rollout as failed."""
        status = self.upstream_status
        return self.kind in ("connection", "timeout") or status == 429 or (status is not None and status >= 500)


@dataclass
class UpstreamCall:
    """The outcome of one successful call: the decoded body plus what cost and debugging need."""

    body: JSONObject
    latency_s: float
    attempts: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class UpstreamEndpoint:
    base_url: str
    model: str
    api_key: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.extra_headers}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    async def post(
        self, http: HttpCaller, path: str, body: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> UpstreamCall:
        """One attempt. `timeout_s` caps the whole call: OpenRouter's whitespace keep-alive padding resets a
        per-read timeout, so without a total cap one call can run for many minutes."""
        url = self.url(path)
        started = time.perf_counter()
        try:  # the pools' timeout caps the whole call, answer included
            response = await http.post(url, content=orjson.dumps(body), headers=self.headers(), timeout=timeout_s)
        except (TransportTimeout, TimeoutError) as exc:
            raise UpstreamError(
                f"Timed out calling {url} after {time.perf_counter() - started:.1f}s ({type(exc).__name__}). The "
                "upstream is slow or unreachable; raise the model server's timeout_s or check base_url.",
                status_code=504,
                retryable=True,
                kind="timeout",
            ) from None
        except TransportError as exc:
            raise UpstreamError(
                f"Cannot connect to {url}: {type(exc).__name__}: {exc or 'connection closed'}. Check that base_url "
                "is right and the server is running.",
                status_code=502,
                retryable=True,
                kind="connection",
            ) from None
        latency = time.perf_counter() - started
        payload = _decode(response)
        if response.status_code >= 400 or (
            isinstance(payload, dict)
            and payload.get("error")
            and not payload.get("choices")
            and not payload.get("output")
        ):
            raise self._error(url, response.status_code, payload, response.headers)
        if not isinstance(payload, dict) or not (payload.get("choices") or payload.get("output") is not None):
            # OpenRouter's "warming up" answers come without choices; a truncated body lands here too.
            raise UpstreamError(
                f"{url} answered HTTP {response.status_code} without choices or output: {self._clip(payload, 300)!r}",
                status_code=502,
                upstream_status=response.status_code,
                retryable=True,
            )
        failed = next(
            (
                c
                for c in payload.get("choices") or []
                if isinstance(c, dict) and (c.get("finish_reason") == "error" or c.get("error"))
            ),
            None,
        )
        if failed is not None:
            # The provider broke off after partial output (OpenRouter's finish_reason "error"): the turn is lost,
            # and another attempt is the way to get it.
            detail = failed.get("error")
            if not isinstance(detail, dict):
                detail = {}
            raise UpstreamError(
                f"Upstream {url} failed mid-answer: {detail.get('message') or 'finish_reason error'}",
                status_code=502,
                upstream_status=response.status_code,
                body=payload,
                retryable=True,
            )
        return UpstreamCall(body=payload, latency_s=latency, headers=dict(response.headers))

    def _clip(self, value: Any, limit: int) -> str:
        """Upstream text for a message, shortened only after this endpoint's key is taken out: cutting first could
        leave a prefix of the key that value-based redaction no longer recognises."""
        text = str(value)
        if self.api_key:
            text = text.replace(self.api_key, REDACTED)
        return text[:limit]

    def _error(self, url: str, status: int, payload: Any, headers: Mapping[str, str]) -> UpstreamError:
        detail = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(detail, dict):
            message = str(detail.get("message") or detail)
            raw = (detail.get("metadata") or {}).get("raw") if isinstance(detail.get("metadata"), dict) else None
            if raw:
                message += f" (provider said: {self._clip(raw, 300)})"
            code = detail.get("code")
            if status < 400 and isinstance(code, int) and code >= 400:
                status = code  # OpenRouter can put an error with its real code inside an HTTP 200 body.
        else:
            message = self._clip(detail or payload, 500)
        hint = _hint(status, self.model, self.base_url)
        answered = status if status >= 400 else 502
        return UpstreamError(
            f"Upstream {url} answered HTTP {status}: {message}. {hint}".strip(),
            status_code=answered,
            upstream_status=status,
            body=payload,
            retryable=status in RETRYABLE_STATUSES or status < 400,
            retry_after_s=retry_after_seconds(headers),
        )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _decode(response: HttpResponse) -> Any:
    content = response.content.strip()  # OpenRouter may pad a body with whitespace before the JSON.
    if not content:
        return {}
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return {"error": {"message": f"non-JSON body: {response.text[:300]!r}"}}


def _hint(status: int, model: str, base_url: str) -> str:
    if status in (401, 403):
        key_hint = " (OpenRouter keys start with sk-or-)" if is_openrouter(base_url) else ""
        return (
            f"Authentication failed: check api_key / policy_api_key in env.yaml{key_hint}, that the key is "
            "active, and that the account has credits."
        )
    if status == 402:
        return "The account is out of credits: add credits or lower max_output_tokens."
    if status == 404:
        return (
            f"Model '{model}' was not found or has no endpoint for this request: check the id format "
            "provider/model-name against the catalog, and that the model supports tools if tools were sent."
        )
    if status == 429:
        return (
            "Rate limited: lower num_samples_in_parallel or the model server's max_concurrent_requests; "
            "free (:free) models allow about 20 requests per minute."
        )
    if status in (400, 422):
        return "The upstream rejected the request body; see its message above."
    return ""
