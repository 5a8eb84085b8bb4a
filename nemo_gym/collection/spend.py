"""What the model servers spent upstream while a run ran, read from their `/health` (`spend`), to count dollars that
no record holds: the calls of rollouts cancelled mid-flight (Ctrl-C twice, an outage's drain) are billed all the
same. The figure covers every client of those servers, so it is reported beside the run's own, not merged into it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson

from nemo_gym.http.pool import TransportError
from nemo_gym.http.server_client import ServerClient

MODEL_SERVER_TYPE = "responses_api_models"


@dataclass(frozen=True)
class Ledger:
    """The model servers' spend at one moment (summed over instances and replicas that report one)."""

    cost_usd: float
    calls: int
    """Upstream calls served (0 from servers whose `spend` has no `calls`)."""
    in_flight: int
    reporting: int
    """Replicas that answered with a `spend`; 0 means none keeps a ledger (nothing to compare)."""

    def cost_since(self, before: Ledger) -> float:
        """USD billed between `before` and this reading (never negative)."""
        return round(max(0.0, self.cost_usd - before.cost_usd), 10)


async def read_ledger(servers: ServerClient) -> Ledger:
    urls = [
        url for address in servers.registry.values() if address.server_type == MODEL_SERVER_TYPE for url in address.urls
    ]
    answers = await asyncio.gather(*(_spend_of(servers, url) for url in urls))
    known = [a for a in answers if a is not None]
    return Ledger(
        cost_usd=round(sum(float(a.get("cost_usd") or 0.0) for a in known), 10),
        calls=sum(int(a.get("calls") or 0) for a in known),
        in_flight=sum(int(a.get("in_flight") or 0) for a in known),
        reporting=len(known),
    )


async def settled_ledger(servers: ServerClient, wait_s: float = 5.0) -> Ledger:
    """The ledger once the calls in flight at the model servers have ended (waiting at most `wait_s`): a cancelled
    rollout's last call is billed when it ends, not when its rollout was given up."""
    deadline = time.monotonic() + wait_s
    ledger = await read_ledger(servers)
    while ledger.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        ledger = await read_ledger(servers)
    return ledger


async def _spend_of(servers: ServerClient, url: str) -> dict[str, Any] | None:
    try:
        response = await servers.http.get(url + "/health", timeout=5.0)
        body = orjson.loads(response.content) if response.status_code == 200 else None
    except (TransportError, orjson.JSONDecodeError):
        return None
    spend = body.get("spend") if isinstance(body, dict) else None
    return spend if isinstance(spend, dict) else None
