"""Which fault (if any) hits the next attempt on a model, and what a routing fault looks like on the wire.

Each model draws from its own `random.Random` seeded with the config seed and the model id, so one model's fault
sequence does not depend on how much traffic the others got. Injected faults (tests, demos) take precedence.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from typing import cast

from nemo_gym.emulator.config import FAULT_KINDS, EmulatedModel, EmulatorConfig, FaultKind, FaultRates
from nemo_gym.emulator.errors import PROVIDER_ERROR, EmulatorError
from nemo_gym.protocol.types import JSONObject

NO_FAULT = "none"
RATE_LIMIT_RPM = 20


class FaultSchedule:
    """Draws faults per model; `inject` queues forced ones. Safe to call from a test thread while serving."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._rngs = {m.id: random.Random(f"{config.seed}:faults:{m.id}") for m in config.models}
        self._injected: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        """How many of each fault kind were handed out, injected or drawn."""

    def inject(self, model_id: str, faults: Iterable[str]) -> None:
        """Force the next attempts on `model_id` to fail with `faults` in order (`"none"` forces a clean one)."""
        if model_id not in self._rngs:
            raise ValueError(f"{model_id!r} is not in the emulator's catalog")
        queued = list(faults)
        for kind in queued:
            if kind not in FAULT_KINDS and kind != NO_FAULT:
                raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULT_KINDS)} or 'none'")
        with self._lock:
            self._injected.setdefault(model_id, deque()).extend(queued)

    def clear(self) -> int:
        """Drop the faults injected and not yet handed out (the provider is healthy again); how many there were."""
        with self._lock:
            dropped = sum(len(queue) for queue in self._injected.values())
            self._injected.clear()
        return dropped

    def next(self, model: EmulatedModel) -> FaultKind | None:
        """The fault of the next attempt on `model`: the next injected one, else a draw from its rates."""
        with self._lock:
            queue = self._injected.get(model.id)
            if queue:
                kind = queue.popleft()
                if kind == NO_FAULT:
                    return None
                self.counts[kind] += 1
                return cast(FaultKind, kind)
            draw = self._rngs[model.id].random()
            rates = self._config.faults_of(model)
            threshold = 0.0
            for kind in FAULT_KINDS:
                threshold += getattr(rates, kind)
                if draw < threshold:
                    self.counts[kind] += 1
                    return kind
        return None


def _retry_after_value(seconds: float) -> str:
    """Whole seconds as an integer ("1"), fractions kept ("0.2") so tests can retry fast."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def routing_fault_error(kind: FaultKind, model: EmulatedModel, rates: FaultRates) -> EmulatorError:
    """The HTTP error OpenRouter returns for a fault that happens before the first byte."""
    provider = {"provider_name": model.provider_name}
    if kind == "rate_limit":
        reset_ms = str(int((time.time() + rates.retry_after_s) * 1000))
        limits = {"X-RateLimit-Limit": str(RATE_LIMIT_RPM), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset_ms}
        message = (
            f"Rate limit exceeded: limit_rpm/{model.id}/{uuid.uuid4()}. High demand for {model.id} on "
            f"OpenRouter - limited to {RATE_LIMIT_RPM} requests per minute. Please retry shortly."
        )
        return EmulatorError(
            429,
            message,
            {"headers": limits, "provider_name": None},
            {"Retry-After": _retry_after_value(rates.retry_after_s), **limits},
        )
    if kind == "rate_limit_no_retry_after":
        raw = (
            f"{model.id} is temporarily rate-limited upstream. Please retry shortly, or add your own key to "
            "accumulate your rate limits: https://openrouter.ai/settings/integrations"
        )
        return EmulatorError(429, PROVIDER_ERROR, {**provider, "raw": raw})
    if kind == "server_error":
        return EmulatorError(500, "Internal Server Error")
    if kind == "bad_gateway":
        raw = json.dumps(
            {"error": {"message": "upstream connect error or disconnect/reset before headers", "type": "server_error"}}
        )
        return EmulatorError(502, PROVIDER_ERROR, {**provider, "raw": raw})
    if kind == "unavailable":
        return EmulatorError(503, "Service temporarily unavailable")
    if kind == "timeout":
        return EmulatorError(408, "Operation timed out. Please try again later.")
    raise ValueError(f"{kind!r} is not a routing fault")


def in_band_error(model: EmulatedModel) -> JSONObject:
    """The `error` object of a failure that arrives inside an HTTP 200 (padded body or choice error)."""
    return {
        "code": 502,
        "message": PROVIDER_ERROR,
        "metadata": {"provider_name": model.provider_name, "raw": "upstream stream closed unexpectedly"},
    }
