"""ng_export's settings: what each `+key=value` means, checked before any work, every problem as what to pass.

Settings of one format given with another (`+min_margin` with `+format=sft`) are errors rather than silently
ignored, and the output may not be one of the inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import resolve_input_path
from nemo_gym.config.settings import validated_settings
from nemo_gym.protocol.types import JSONObject
from nemo_gym.training.hub import HubError, check_repo_id
from nemo_gym.training.writers import OutputFormat, output_format_of

FORMAT_SETTINGS: dict[str, set[str]] = {
    "sft": {"min_reward", "best_of_n"},
    "dpo": {"min_margin", "max_pairs_per_row"},
    "rl": {"normalize_std"},
}
"""Settings that apply to one format only: given with another, they are an error rather than silently ignored."""


class ExportSettings(BaseModel):
    """The `+key=value` settings of ng_export."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["sft", "dpo", "rl"] = Field(description="sft, dpo or rl")
    input_jsonl_fpath: list[Path] = Field(description="Rollout files of ng_collect_rollouts (one, or a list)")
    output_fpath: Path = Field(description="The dataset file to write (.jsonl, or .parquet for Parquet)")
    output_format: Literal["jsonl", "parquet"] | None = Field(None, description="Default: from the suffix")
    agent_name: str | None = Field(None, description="Export only this agent's (environment's) rollouts")
    fingerprint: str | None = Field(None, description="Export only rollouts collected with these settings")
    allow_mixed: bool = Field(False, description="Export several agents or settings together")
    keep_reasoning: bool = Field(False, description="Keep reasoning as the assistant's `reasoning_content`")
    min_reward: float | None = Field(None, description="sft: keep rollouts with at least this reward")
    best_of_n: bool = Field(False, description="sft: keep the best rollout of each row (ties: the first)")
    min_margin: float = Field(0.5, gt=0, description="dpo: least reward difference between chosen and rejected")
    max_pairs_per_row: int = Field(1, ge=1, description="dpo: pairs per row, widest margin first")
    normalize_std: bool = Field(True, description="rl: divide advantages by the group's standard deviation")
    push_to_hub: str | None = Field(None, description="Push the dataset to this Hugging Face Hub repository")
    push_to_hub_dry_run_dir: Path | None = Field(None, description="Write what would be pushed to this folder")
    hub_private: bool = Field(True, description="Create the Hub repository as private")
    hub_endpoint: str | None = Field(None, description="Another Hub (default: HF_ENDPOINT, else huggingface.co)")

    @field_validator("input_jsonl_fpath", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @field_validator("agent_name", "fingerprint", "push_to_hub", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        """`+fingerprint=1234...` arrives as a number from the command line; it is a name."""
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @property
    def output_kind(self) -> OutputFormat:
        return output_format_of(self.output_fpath, self.output_format)


HINTS = {
    "format": "+format=sft, +format=dpo or +format=rl",
    "input_jsonl_fpath": 'a rollouts file, or several: "+input_jsonl_fpath=[a.jsonl,b.jsonl]"',
    "output_fpath": "the file to write, e.g. +output_fpath=sft.jsonl (or sft.parquet)",
    "output_format": "jsonl or parquet",
    "min_margin": "a reward difference > 0, e.g. +min_margin=0.5",
    "max_pairs_per_row": "a whole number >= 1",
}


def settings_from(overrides: JSONObject) -> ExportSettings:
    """Validated settings; every problem as `+key: what to pass`."""
    settings = validated_settings(ExportSettings, overrides, "ng_export", HINTS)
    for name, only in FORMAT_SETTINGS.items():
        misplaced = sorted(only & settings.model_fields_set) if name != settings.format else []
        if misplaced:
            raise ConfigError(
                f"+{misplaced[0]} applies to +format={name} only, not +format={settings.format}: drop it."
            )
    if settings.push_to_hub_dry_run_dir is not None and settings.push_to_hub is None:
        raise ConfigError(
            "+push_to_hub_dry_run_dir shows what +push_to_hub would push: pass +push_to_hub=<org>/<name> with it."
        )
    if settings.push_to_hub is not None:
        try:
            check_repo_id(settings.push_to_hub)
        except HubError as exc:
            raise ConfigError(str(exc)) from None
    settings.input_jsonl_fpath = [resolve_input_path(path) for path in settings.input_jsonl_fpath]
    output = settings.output_fpath.resolve()
    if any(path.resolve() == output for path in settings.input_jsonl_fpath):
        raise ConfigError(f"+output_fpath={settings.output_fpath} is one of the inputs: write the export elsewhere.")
    return settings
