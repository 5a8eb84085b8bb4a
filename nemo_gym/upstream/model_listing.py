"""The endpoint's model catalog as a user picks from it (`ng_models`): filters, sorting, cost estimates from sample
rollouts, and the table, JSON or CSV.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nemo_gym.collection.inputs import InputError
from nemo_gym.config.errors import COMMAND_LINE, ConfigError
from nemo_gym.config.settings import check_setting_names
from nemo_gym.config.types import RESERVED_KEYS, GlobalConfig
from nemo_gym.http.pool import make_http_client
from nemo_gym.protocol.types import JSONObject
from nemo_gym.upstream.catalog import Catalog, CatalogModel, load_catalog

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
SORTS = ("id", "price", "prompt_price", "completion_price", "context", "estimate")
CAVEAT = "Other models use other tokenizers and answer at other lengths, so these costs are estimates."


class ModelsSettings(BaseModel):
    """The `+key=value` settings of ng_models."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    base_url: str = Field(OPENROUTER_BASE_URL, description="The API root; default policy_base_url")
    api_key: str | None = Field(None, description="Sent as Bearer; default policy_api_key")
    search: str | None = Field(None, description="Case-insensitive substring of the id or name")
    tools: bool = Field(False, description="Only models that list tool support")
    max_price: float | None = Field(None, ge=0, description="USD per million tokens, prompt and completion")
    max_prompt_price: float | None = Field(None, ge=0)
    max_completion_price: float | None = Field(None, ge=0)
    sort: Literal["id", "price", "prompt_price", "completion_price", "context", "estimate"] | None = None
    limit: int | None = Field(None, ge=1, description="Rows shown")
    offline: bool = Field(False, description="Use only the cached catalog")
    cache_dir: Path | None = None
    format: Literal["table", "json", "csv"] = "table"
    estimate_from: Path | None = Field(None, description="Sample rollouts (ng_collect_rollouts output)")
    input_jsonl_fpath: Path | None = Field(None, description="The dataset; its non-blank lines are counted")
    dataset_rows: int | None = Field(None, ge=1)
    num_repeats: int = Field(1, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


SETTING_KEYS = set(ModelsSettings.model_fields)
HINTS = {
    "base_url": "the API root with its scheme, e.g. +base_url=https://openrouter.ai/api/v1",
    "sort": f"one of {', '.join(SORTS)}",
    "format": "table, json or csv",
    "tools": "true or false",
    "offline": "true or false",
    "max_price": "USD per million tokens, a number >= 0, e.g. +max_price=1.5",
    "limit": "a whole number >= 1",
    "dataset_rows": "a whole number >= 1",
    "num_repeats": "a whole number >= 1",
}


def settings_from(config: GlobalConfig) -> ModelsSettings:
    """Settings come from the command line only; policy_base_url / policy_api_key may come from env.yaml."""
    given = {k: v for k, v in config.data.items() if config.origins.get(k) == COMMAND_LINE}
    check_setting_names(
        [k for k in given if k not in RESERVED_KEYS and not k.startswith("policy_")], SETTING_KEYS, "ng_models"
    )
    values = {k: v for k, v in given.items() if k in SETTING_KEYS}
    values.setdefault("base_url", config.data.get("policy_base_url") or OPENROUTER_BASE_URL)
    values.setdefault("api_key", config.data.get("policy_api_key") or None)
    try:
        settings = ModelsSettings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else "?"
            hint = HINTS.get(key, HINTS["max_price"] if key.startswith("max_") else "")
            problems.append(
                f"+{key}={error.get('input')!r} is not valid: " + (f"pass {hint}" if hint else error["msg"].lower())
            )
        raise ConfigError("; ".join(problems) + ".") from None
    if settings.sort == "estimate" and settings.estimate_from is None:
        raise ConfigError("+sort=estimate needs +estimate_from=<rollouts.jsonl> (records of ng_collect_rollouts).")
    if settings.input_jsonl_fpath is not None and settings.dataset_rows is not None:
        raise ConfigError("Pass the dataset size once: +input_jsonl_fpath=<dataset.jsonl> or +dataset_rows=N.")
    if settings.estimate_from is None and (settings.input_jsonl_fpath or settings.dataset_rows):
        raise ConfigError("A dataset size estimates cost only with a sample: add +estimate_from=<rollouts.jsonl>.")
    return settings


@dataclass(frozen=True)
class Sample:
    """Token totals of a rollouts file's successful records."""

    path: Path
    rollouts: int
    failed: int
    input_tokens: int
    output_tokens: int


def _tokens(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_sample(path: Path) -> Sample:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(
            f"Cannot read +estimate_from={path}: {exc.strerror or exc}. Pass a rollouts file written "
            "by ng_collect_rollouts."
        ) from None
    rollouts = failed = input_tokens = output_tokens = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise InputError(f"{path}:{number}: not valid JSON; each line must be one rollout record.") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}:{number}: a rollout record must be a JSON object.")
        if record.get("error") is not None:
            failed += 1
            continue
        usage = record.get("usage")
        if not isinstance(usage, dict) or not (
            _tokens(usage.get("input_tokens")) and _tokens(usage.get("output_tokens"))
        ):
            raise InputError(
                f"{path}:{number}: the record has no usage with input_tokens and output_tokens "
                "(whole numbers); pass records written by ng_collect_rollouts."
            )
        rollouts += 1
        input_tokens += usage["input_tokens"]
        output_tokens += usage["output_tokens"]
    if not rollouts:
        raise InputError(f"{path} has no successful rollout records ({failed} failed) to estimate from.")
    return Sample(path, rollouts, failed, input_tokens, output_tokens)


def count_rows(path: Path) -> int:
    try:
        with path.open(encoding="utf-8") as handle:
            count = sum(1 for line in handle if line.strip())
    except OSError as exc:
        raise InputError(
            f"Cannot read +input_jsonl_fpath={path}: {exc.strerror or exc}. Pass the dataset JSONL or +dataset_rows=N."
        ) from None
    if not count:
        raise InputError(f"+input_jsonl_fpath={path} has no rows; pass the dataset JSONL or +dataset_rows=N.")
    return count


def model_row(model: CatalogModel, sample: Sample | None, rollouts: int | None) -> JSONObject:
    price = model.price
    row: JSONObject = {
        "id": model.id,
        "name": model.name,
        "prompt_usd_per_million": price.prompt if price else None,
        "completion_usd_per_million": price.completion if price else None,
        "context_length": model.context_length,
        "supports_tools": model.supports_tools,
    }
    if sample is not None:
        row["estimate_usd_per_rollout"] = (
            (price.cost_usd(sample.input_tokens, sample.output_tokens) / sample.rollouts) if price else None
        )
        if rollouts:
            row["estimate_usd_total"] = (
                (price.cost_usd(sample.input_tokens * rollouts, sample.output_tokens * rollouts) / sample.rollouts)
                if price
                else None
            )
    return row


def select(catalog: Catalog, settings: ModelsSettings, sample: Sample | None, rollouts: int | None) -> list[JSONObject]:
    """The filtered catalog, sorted (unknown values last, ties by id)."""
    needle = (settings.search or "").lower()
    prompt_caps = [c for c in (settings.max_price, settings.max_prompt_price) if c is not None]
    completion_caps = [c for c in (settings.max_price, settings.max_completion_price) if c is not None]
    rows = []
    for model in catalog.models:
        price = model.price
        if needle and needle not in model.id.lower() and needle not in model.name.lower():
            continue
        if settings.tools and model.supports_tools is not True:
            continue
        if (prompt_caps or completion_caps) and (
            price is None
            or any(price.prompt > c for c in prompt_caps)
            or any(price.completion > c for c in completion_caps)
        ):
            continue
        rows.append(model_row(model, sample, rollouts))
    sort = settings.sort or ("estimate" if sample else "id")

    def key(row: JSONObject) -> tuple[bool, float, str]:
        prompt, completion = row["prompt_usd_per_million"], row["completion_usd_per_million"]
        value = {
            "id": 0.0,
            "price": None if prompt is None else prompt + completion,
            "prompt_price": prompt,
            "completion_price": completion,
            "estimate": row.get("estimate_usd_per_rollout"),
            "context": None if row["context_length"] is None else -row["context_length"],
        }[sort]
        return value is None, value or 0.0, row["id"]

    return sorted(rows, key=key)


def _number(value: float | None) -> str:
    """0.15, 10, 0 (per-million prices as they are written); '-' when unknown."""
    return "-" if value is None else format(Decimal(repr(value)).normalize(), "f")


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value >= 100 else format(Decimal(f"{value:.4g}").normalize(), "f")


def _tokens_label(total: int, count: int) -> str:
    return f"{total / count:,.1f}".removesuffix(".0")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number(value) if isinstance(value, float) else str(value)


def source_line(catalog: Catalog, reason: str | None) -> str:
    if reason is None:
        return f"Catalog: {catalog.base_url}, live, fetched {catalog.age_label}"
    return f"Catalog: {catalog.base_url}, cached {catalog.age_label} ({reason})"


def estimate_line(sample: Sample, rows: int | None, repeats: int) -> str:
    skipped = f" (skipped {sample.failed} failed)" if sample.failed else ""
    plural = "s" if repeats > 1 else ""
    size = (
        f"dataset {rows} rows x {repeats} repeat{plural} = {rows * repeats} rollouts"
        if rows
        else "no dataset size (+input_jsonl_fpath=... or +dataset_rows=N), so per rollout only"
    )
    return (
        f"Estimate from {sample.rollouts} sample rollouts in {sample.path}{skipped}: "
        f"{_tokens_label(sample.input_tokens, sample.rollouts)} input + "
        f"{_tokens_label(sample.output_tokens, sample.rollouts)} output tokens per rollout on average; "
        f"{size}. {CAVEAT}"
    )


def table(rows: list[JSONObject], sample: Sample | None, rollouts: int | None) -> list[str]:
    tools = {True: "yes", False: "no", None: "?"}
    headers = ["model", "prompt $/M", "completion $/M", "context", "tools"]
    cells = [
        [
            r["id"],
            _number(r["prompt_usd_per_million"]),
            _number(r["completion_usd_per_million"]),
            "-" if r["context_length"] is None else str(r["context_length"]),
            tools[r["supports_tools"]],
        ]
        for r in rows
    ]
    if sample is not None:
        headers.append("est. $/rollout")
        for cell, row in zip(cells, rows, strict=True):
            cell.append(_usd(row["estimate_usd_per_rollout"]))
    if rollouts:
        headers.append("est. $ total")
        for cell, row in zip(cells, rows, strict=True):
            cell.append(_usd(row["estimate_usd_total"]))
    widths = [max(len(line[i]) for line in [headers, *cells]) for i in range(len(headers))]
    return [
        "  ".join(
            text.ljust(w) if i in (0, 4) else text.rjust(w)
            for i, (text, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in [headers, *cells]
    ]


def render(
    catalog: Catalog, reason: str | None, settings: ModelsSettings, sample: Sample | None, rows: int | None
) -> tuple[list[str], list[str]]:
    """(stdout lines, stderr notes) in the chosen format."""
    rollouts = rows * settings.num_repeats if rows else None
    matched = select(catalog, settings, sample, rollouts)
    shown = matched[: settings.limit] if settings.limit else matched
    count = f"{len(shown)} of {len(catalog.models)} models" + (
        f" ({len(matched)} matched, +limit={settings.limit})" if len(shown) < len(matched) else ""
    )
    notes = [source_line(catalog, reason)] + ([estimate_line(sample, rows, settings.num_repeats)] if sample else [])
    if settings.format == "table":
        return [*notes, *table(shown, sample, rollouts), count], []
    if settings.format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(shown[0]) if shown else ["id"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in r.items()} for r in shown)
        return buffer.getvalue().splitlines(), [*notes, count]
    estimate = (
        None
        if sample is None
        else {
            "records_path": str(sample.path),
            "sample_rollouts": sample.rollouts,
            "failed_skipped": sample.failed,
            "mean_input_tokens": sample.input_tokens / sample.rollouts,
            "mean_output_tokens": sample.output_tokens / sample.rollouts,
            "dataset_rows": rows,
            "num_repeats": settings.num_repeats,
            "rollouts": rollouts,
            "caveat": CAVEAT,
        }
    )
    document = {
        "source": catalog.source,
        "base_url": catalog.base_url,
        "fetched_at": catalog.fetched_at.isoformat(),
        "cache_reason": reason,
        "models_in_catalog": len(catalog.models),
        "models_matched": len(matched),
        "estimate": estimate,
        "models": shown,
    }
    return [json.dumps(document, indent=2)], ([f"note: {notes[0]}"] if reason else [])


async def fetch(settings: ModelsSettings) -> tuple[Catalog, str | None]:
    async with make_http_client(max_connections=4, connect_timeout=10.0) as http:
        return await load_catalog(
            http, settings.base_url, api_key=settings.api_key, offline=settings.offline, cache_dir=settings.cache_dir
        )
