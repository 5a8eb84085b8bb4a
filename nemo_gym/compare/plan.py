"""Planning a model comparison: one agent and resources server, one model server per compared model.

`+models=[a, b]` makes a copy of the agent's model server per model id (its other settings unchanged, fallbacks
off, so each row measures that model alone); `+model_servers=[x, y]` compares whole model-server instances from the
config files as they are. Each variant gets its own agent instance pointing at its model server and its own
rollouts file, so re-running the comparison resumes each model where it stopped.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.collection.collector import CollectionSettings
from nemo_gym.collection.inputs import row_hash
from nemo_gym.collection.resume import read_records
from nemo_gym.compare.statistics import Comparison, recommend, summarize
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.types import GlobalConfig, InstanceSpec
from nemo_gym.protocol.types import JSONObject

MODEL_SERVER_TYPE = "responses_api_models"
AGENT_TYPE = "responses_api_agents"


class ComparisonSettings(BaseModel):
    """The `+key=value` settings of ng_compare_models; collection settings apply to every model alike."""

    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(
        default_factory=list, description="Model ids, each run on a copy of the agent's model server"
    )
    model_servers: list[str] = Field(
        default_factory=list, description="Model-server instances from the config files, each compared as configured"
    )
    agent_name: str | None = Field(default=None, description="The agent to run; default: the only one configured")
    input_jsonl_fpath: Path
    output_dir: Path = Field(default=Path("results/model_comparison"))
    title: str | None = None
    report_only: bool = Field(default=False, description="Rebuild the report from the rollouts files; run nothing")
    limit: int | None = Field(default=None, ge=1)
    num_repeats: int = Field(default=1, ge=1)
    num_samples_in_parallel: int = Field(default=16, ge=1)
    responses_create_params: JSONObject = Field(default_factory=dict)
    retry_failed: bool = False
    max_cost_usd: float | None = Field(default=None, gt=0, description="Budget per model (USD)")
    drain_timeout_s: float = Field(default=30.0, ge=0)
    startup_timeout_s: float = Field(default=600.0, gt=0)


@dataclass(frozen=True)
class Variant:
    """One compared model: how the report names it, and the instances and file that belong to it."""

    label: str
    model: str
    model_instance: str
    agent_instance: str
    rollouts_path: Path

    def collection_settings(self, settings: ComparisonSettings) -> CollectionSettings:
        return CollectionSettings(
            agent_name=self.agent_instance,
            input_jsonl_fpath=settings.input_jsonl_fpath,
            output_jsonl_fpath=self.rollouts_path,
            limit=settings.limit,
            num_repeats=settings.num_repeats,
            num_samples_in_parallel=settings.num_samples_in_parallel,
            responses_create_params=settings.responses_create_params,
            retry_failed=settings.retry_failed,
            max_cost_usd=settings.max_cost_usd,
            drain_timeout_s=settings.drain_timeout_s,
        )


def slug(text: str) -> str:
    """A file- and instance-name-safe form of a model id: `openai/gpt-4o-mini` -> `openai_gpt-4o-mini`."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "model"


def plan(config: GlobalConfig, settings: ComparisonSettings) -> tuple[GlobalConfig, list[Variant]]:
    """The config to start (resources servers, one model server and agent per variant) and the variants."""
    instances = config.instances
    agent = _agent(instances, settings.agent_name)
    base_model_name = _model_server_of(agent)
    if not settings.models and not settings.model_servers:
        raise ConfigError(
            "Nothing to compare: pass +models=[provider/model-a, provider/model-b] (run on copies of "
            f"'{base_model_name}') and/or +model_servers=[instance-a, instance-b] (model-server "
            "instances from your config files)."
        )
    data = {
        k: v
        for k, v in config.data.items()
        if k not in instances or instances[k].server_type not in (MODEL_SERVER_TYPE, AGENT_TYPE)
    }
    variants: list[Variant] = []
    rollouts_dir = settings.output_dir / "rollouts"
    for model in settings.models:
        if base_model_name not in instances:
            raise ConfigError(
                f"Agent '{agent.name}' uses model server '{base_model_name}', which is not "
                "configured; add its config file (e.g. responses_api_models/openai_model/configs/"
                "openai_model.yaml) to +config_paths."
            )
        base = instances[base_model_name]
        block = {**copy.deepcopy(base.config), "model": model}
        for key in ("fallback_models", "fallbacks"):  # each row measures the model itself
            if block.get(key):
                block[key] = []
        variants.append(
            _add_variant(
                data,
                config.data,
                agent,
                base,
                block,
                label=model,
                model=model,
                key=slug(model),
                rollouts_dir=rollouts_dir,
            )
        )
    for name in settings.model_servers:
        spec = instances.get(name)
        if spec is None or spec.server_type != MODEL_SERVER_TYPE:
            known = sorted(n for n, s in instances.items() if s.server_type == MODEL_SERVER_TYPE)
            raise ConfigError(
                f"+model_servers names '{name}', which is not a model-server instance of the config. "
                f"Model servers configured: {', '.join(known) or 'none'}."
            )
        model = str(spec.config.get("model") or name)
        variants.append(
            _add_variant(
                data,
                config.data,
                agent,
                spec,
                copy.deepcopy(spec.config),
                label=name,
                model=model,
                key=slug(name),
                rollouts_dir=rollouts_dir,
            )
        )
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"A model is listed twice in +models/+model_servers: {labels}.")
    return GlobalConfig(data=data, origins=config.origins), variants


def _agent(instances: dict[str, InstanceSpec], name: str | None) -> InstanceSpec:
    agents = sorted(n for n, s in instances.items() if s.server_type == AGENT_TYPE)
    if name is None:
        if len(agents) != 1:
            raise ConfigError(
                f"Pass +agent_name=... to say which agent to compare models with; configured agents: "
                f"{', '.join(agents) or 'none (add an environment config to +config_paths)'}."
            )
        name = agents[0]
    if name not in agents:
        raise ConfigError(f"No agent named '{name}' in the config. Agents: {', '.join(agents) or 'none'}.")
    return instances[name]


def _model_server_of(agent: InstanceSpec) -> str:
    ref = agent.config.get("model_server")
    if not isinstance(ref, dict) or not ref.get("name"):
        raise ConfigError(
            f"Agent '{agent.name}' has no `model_server: {{type: responses_api_models, name: ...}}`; "
            "ng_compare_models swaps that model server per compared model."
        )
    return str(ref["name"])


def _add_variant(
    data: JSONObject,
    original: JSONObject,
    agent: InstanceSpec,
    model_spec: InstanceSpec,
    model_block: JSONObject,
    *,
    label: str,
    model: str,
    key: str,
    rollouts_dir: Path,
) -> Variant:
    model_instance = f"{model_spec.name}__{key}" if label == model else model_spec.name
    agent_instance = f"{agent.name}__{key}"
    model_block.pop("port", None)
    data[model_instance] = {model_spec.server_type: {model_spec.impl: model_block}}
    agent_block = copy.deepcopy(original[agent.name][agent.server_type][agent.impl])
    agent_block.pop("port", None)
    agent_block["model_server"] = {**agent_block["model_server"], "name": model_instance}
    data[agent_instance] = {agent.server_type: {agent.impl: agent_block}}
    return Variant(
        label=label,
        model=model,
        model_instance=model_instance,
        agent_instance=agent_instance,
        rollouts_path=rollouts_dir / f"{key}.jsonl",
    )


def build_comparison(
    variants: list[Variant], settings: ComparisonSettings, rows: list[JSONObject], *, dataset: str
) -> Comparison:
    """Summaries from each variant's rollouts file, counting only this dataset's rows and repeats."""
    wanted = {(row_hash(row), repeat) for row in rows for repeat in range(settings.num_repeats)}
    summaries = []
    for variant in variants:
        records = [r for key, r in read_records(variant.rollouts_path).items() if key in wanted]
        summaries.append(summarize(variant.label, variant.model, records, rollouts_path=str(variant.rollouts_path)))
    title = settings.title or f"Model comparison on {Path(dataset).name}"
    return Comparison(
        title=title,
        dataset=dataset,
        rows=len(rows),
        num_repeats=settings.num_repeats,
        created_at=datetime.now(UTC),
        models=summaries,
        recommendation=recommend(summaries),
    )
