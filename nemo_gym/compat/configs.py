"""NeMo Gym's `config_types`: server references, the server config bases and the dataset entries of a config block.

The config bases extend our own `BaseServerConfig`, so a NeMo Gym environment's config class validates its YAML block
exactly as ours do: the keys NeMo Gym's config files carry (`domain`, `verified`, `description`, `value`, `datasets`,
...) are declared and accepted, and an unknown key is still refused at start-up with the file and the key.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from nemo_gym.servers.base import BaseServerConfig as _NativeServerConfig

AGENT_REF_KEY = "agent_ref"


class ModelServerRef(BaseModel):
    type: Literal["responses_api_models"] = "responses_api_models"
    name: str


class ResourcesServerRef(BaseModel):
    type: Literal["resources_servers"] = "resources_servers"
    name: str


class AgentServerRef(BaseModel):
    type: Literal["responses_api_agents"] = "responses_api_agents"
    name: str


ServerRef = ModelServerRef | ResourcesServerRef | AgentServerRef
ServerRefTypeAdapter: TypeAdapter[ServerRef] = TypeAdapter(ServerRef)


def is_server_ref(config: Any) -> ServerRef | None:
    """The reference `config` is (`{type: ..., name: ...}`), or None."""
    if not isinstance(config, dict) or set(config) != {"type", "name"}:
        return None
    try:
        return ServerRefTypeAdapter.validate_python(config)
    except ValueError:
        return None


class Domain(str, Enum):  # noqa: UP042 - str() as NeMo Gym gives it
    MATH = "math"
    CODING = "coding"
    AGENT = "agent"
    KNOWLEDGE = "knowledge"
    INSTRUCTION_FOLLOWING = "instruction_following"
    LONG_CONTEXT = "long_context"
    SAFETY = "safety"
    GAMES = "games"
    TRANSLATION = "translation"
    E2E = "e2e"
    RLHF = "rlhf"
    OTHER = "other"


DatasetType = Literal["train", "validation", "example", "benchmark"]


class DatasetConfig(BaseModel):
    """One entry of a config block's `datasets:` list. Where the data comes from (`gitlab_identifier`,
    `huggingface_identifier`, `source`) is kept as given; data is read from `jsonl_fpath` here."""

    model_config = ConfigDict(extra="forbid")
    name: str
    type: DatasetType
    jsonl_fpath: str
    num_repeats: int = Field(default=1, ge=1)
    license: str | None = None
    source: dict[str, Any] | None = None
    gitlab_identifier: dict[str, Any] | None = None
    huggingface_identifier: dict[str, Any] | None = None
    prepare_script: str | None = None
    prompt_config: str | None = None


class BaseServerConfig(_NativeServerConfig):
    """`host`/`port` of a server, plus our own keys (`num_workers`, `num_replicas`, `ray`)."""

    @field_validator("num_workers", mode="before")
    @classmethod
    def _workers_default(cls, value: Any) -> Any:
        return 1 if value is None else value  # NeMo Gym writes `num_workers: null` for "one"


class BaseRunServerConfig(BaseServerConfig):
    entrypoint: str = "app.py"
    domain: Domain | None = None
    datasets: list[DatasetConfig] | None = None  # type: ignore[assignment]
    allowed_agents: list[str] | None = None
    allowed_model_types: list[str] | None = None


class BaseRunServerInstanceConfig(BaseRunServerConfig):
    name: str = Field(default="", description="The instance's name (its top-level key); filled in at start-up")
