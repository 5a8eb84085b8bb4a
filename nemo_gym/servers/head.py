"""The head server: where clients find instances by name, and the resolved config with secrets redacted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from nemo_gym.config.secrets import Redactor, collect_secrets
from nemo_gym.config.types import GlobalConfig
from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.base import JSONResponse


def build_head_app(
    config: GlobalConfig,
    pids: Mapping[str, int] | None = None,
    replicas: Mapping[str, list[JSONObject]] | None = None,
    ray: Mapping[str, Any] | None = None,
) -> FastAPI:
    """`GET /instances` → {name: {server_type, impl, url, pid, replicas}}; `GET /config` → redacted resolved config.

    `replicas` (instance → [{url, pid, node, replica}]) is read at request time: ng_run fills it in as replicas
    start, and replaces an entry when Ray restarts a replica at a new address. `url` is then the first replica's.
    `ray` ({address}) says which Ray cluster the replicas run on, for collectors that shard over it."""
    redactor = Redactor(collect_secrets(config.data))
    instances = {
        name: {"server_type": spec.server_type, "impl": spec.impl, "url": spec.url()}
        for name, spec in config.instances.items()
    }
    app = FastAPI(title="NeMo Gym head server", default_response_class=JSONResponse)

    @app.get("/health")
    async def health() -> JSONObject:
        return {"status": "ok", "name": "head", "instances": len(instances)}

    @app.get("/instances")
    async def list_instances() -> JSONObject:
        # pids and replicas fill in as ng_run starts the processes, so read them at request time.
        listed: dict[str, JSONObject] = {}
        for name, entry in instances.items():
            listed[name] = {**entry, "pid": (pids or {}).get(name)}
            if replicas and replicas.get(name):
                live = list(replicas[name])
                listed[name].update(url=live[0]["url"], pid=live[0].get("pid"), replicas=live)
        return {"instances": listed, **({"ray": dict(ray)} if ray else {})}

    @app.get("/config")
    async def resolved_config() -> Any:
        return redactor.config(config.data)

    return app
