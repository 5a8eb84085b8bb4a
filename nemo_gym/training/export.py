"""ng_export's engine: rollout files to one training dataset (sft, dpo or rl), JSON Lines or Parquet, streaming.

Rows come from the shared reader (every rollout of a dataset row together, big inputs spilled to bucket files), so
memory follows one row group and one output batch, never the input's size. What cannot be used is counted and
explained: lines and records the reader skipped, rollouts the format left out. Inputs that mix environments
(agents) or collection settings (fingerprints) are refused unless asked for: one environment's data under another's
name, or a changed model's rollouts among the old ones, would be a silently wrong dataset.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from nemo_gym.extras import import_extra
from nemo_gym.protocol.types import JSONObject
from nemo_gym.training import hub
from nemo_gym.training.dpo import DpoFormat
from nemo_gym.training.export_settings import ExportSettings
from nemo_gym.training.formats import ExportFormat
from nemo_gym.training.reading import RolloutFiles, RowGroup
from nemo_gym.training.rl import RlFormat
from nemo_gym.training.sft import SftFormat
from nemo_gym.training.writers import open_writer


def make_format(settings: ExportSettings) -> ExportFormat:
    if settings.format == "sft":
        return SftFormat(
            keep_reasoning=settings.keep_reasoning, min_reward=settings.min_reward, best_of_n=settings.best_of_n
        )
    if settings.format == "dpo":
        return DpoFormat(
            keep_reasoning=settings.keep_reasoning,
            min_margin=settings.min_margin,
            max_pairs_per_row=settings.max_pairs_per_row,
        )
    return RlFormat(keep_reasoning=settings.keep_reasoning, normalize_std=settings.normalize_std)


class ExportRefused(Exception):
    """The inputs cannot make the dataset asked for (mixed, or nothing left); nothing was written."""


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + ".export.json")


@dataclass
class ExportSummary:
    """What an export read, left out and wrote: printed, and written beside the output."""

    settings: ExportSettings
    read: JSONObject
    skipped: list[str]
    dropped: JSONObject
    dropped_explained: list[str]
    rows_written: int
    agents: dict[str, int]
    fingerprints: dict[str, int]
    wall_time_s: float
    hub: JSONObject = field(default_factory=dict)

    @property
    def lines_per_s(self) -> float:
        return float(self.read["lines"]) / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def to_json(self) -> JSONObject:
        return {
            "format": self.settings.format,
            "output_fpath": str(self.settings.output_fpath),
            "output_format": self.settings.output_kind,
            "rows_written": self.rows_written,
            "records_read": self.read["records"],
            "rows_read": self.read["rows"],
            "agents": self.agents,
            "fingerprints": self.fingerprints,
            "skipped": self.skipped,
            "dropped_explained": self.dropped_explained,
            "dropped": self.dropped,
            "input": self.read,
            "settings": self.settings.model_dump(mode="json", exclude_defaults=True),
            "wall_time_s": round(self.wall_time_s, 3),
            "lines_per_s": round(self.lines_per_s, 1),
            **({"hub": self.hub} if self.hub else {}),
        }

    def lines(self) -> list[str]:
        unit = {"sft": "conversations", "dpo": "pairs", "rl": "rows"}[self.settings.format]
        return [
            f"wrote {self.rows_written:,} {self.settings.format} {unit} to {self.settings.output_fpath} "
            f"({self.settings.output_kind}) from {self.read['records']:,} usable rollouts of "
            f"{self.read['rows']:,} rows ({self.read['lines']:,} lines in {len(self.read['files'])} file(s), "
            f"{self.wall_time_s:.1f} s, {self.lines_per_s:,.0f} lines/s)",
            *self.skipped,
            *self.dropped_explained,
            *([f"pushed to {self.hub['url']}"] if "url" in self.hub else []),
            *([f"wrote what would be pushed to {self.hub['dry_run_dir']}"] if "dry_run_dir" in self.hub else []),
        ]


def export(settings: ExportSettings, *, progress: Callable[[str], None] | None = None) -> ExportSummary:
    """Write the dataset and `<output stem>.export.json`; push it when asked. Raises ExportRefused (nothing
    written), hub.HubError, TrainingInputError, MissingExtra."""
    token = _hub_preflight(settings)
    started = time.perf_counter()
    files = RolloutFiles(
        settings.input_jsonl_fpath,
        agent_names=[settings.agent_name] if settings.agent_name else None,
        bucket_bytes=EXPORT_BUCKET_BYTES,
    )
    if progress is not None:
        progress(f"reading {len(files.paths)} file(s), {files.size_bytes / 1e6:,.1f} MB")
    export_format = make_format(settings)
    agents: Counter[str] = Counter()
    fingerprints: Counter[str] = Counter()
    with fewer_collections(), open_writer(settings.output_fpath, settings.output_kind, export_format) as writer:
        for group in files.rows():
            selected = _selected(group, settings.fingerprint, export_format)
            for record in selected.records:
                agents[str(record.get("agent_name"))] += 1
                fingerprints[str(record.get("fingerprint") or "unknown")] += 1
            if selected.records:
                for row in export_format.rows(selected):
                    writer.write(row)
        problem = mixing_problem(agents, fingerprints, settings) or _nothing_written(writer.rows, files, export_format)
        if problem is not None:
            writer.discard()
            raise ExportRefused(problem)
        writer.commit()
    summary = ExportSummary(
        settings=settings,
        read=files.report.to_json(),
        skipped=files.report.explained(),
        dropped=export_format.dropped.to_json(),
        dropped_explained=export_format.dropped.explained(),
        rows_written=writer.rows,
        agents=dict(sorted(agents.items())),
        fingerprints=dict(sorted(fingerprints.items())),
        wall_time_s=time.perf_counter() - started,
    )
    _write_summary(summary)
    if settings.push_to_hub is not None:
        try:
            summary.hub = _to_hub(settings, summary, token)
        except hub.HubError as exc:
            raise hub.HubError(f"{exc} The dataset itself is written: {settings.output_fpath}.") from None
        _write_summary(summary)
    return summary


def _write_summary(summary: ExportSummary) -> None:
    path = summary_path(summary.settings.output_fpath)
    path.write_bytes(orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


EXPORT_BUCKET_BYTES = 8 * 1024 * 1024
"""The reader's bucket size for an export: half its default. Every record of a bucket is alive while the bucket is
grouped, and the fewer they are, the faster each is parsed and converted (they stay in the CPU's caches and the
allocator's free lists; 8 MB buckets exported about 15% faster than 16 MB ones here). The reader still deals inputs
of up to 256 x 8 MB = 2 GB (a million 2 KB records) in one pass, and splits bigger ones again, so memory stays
flat in the input's size."""


YOUNG_GENERATION_THRESHOLD = 100_000
"""Net container allocations between young collections while exporting (CPython's default is 700)."""


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect the young generation rarely while exporting. A group of rows keeps thousands of parsed records
    (each a tree of dicts) alive, so the default 700-allocation collections examine them over and over and free
    nothing: they took half of an export's time. Records are trees, freed by reference counting; cycles are still
    collected, in larger batches. The caller's settings come back afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _selected(group: RowGroup, fingerprint: str | None, export_format: ExportFormat) -> RowGroup:
    """The group with only the rollouts of `fingerprint` (when one is picked)."""
    if fingerprint is None:
        return group
    kept = []
    for record in group.records:
        if record.get("fingerprint") == fingerprint:
            kept.append(record)
        else:
            export_format.dropped.add("other_fingerprint", record)
    return RowGroup(row_hash=group.row_hash, records=kept)


def mixing_problem(agents: Counter[str], fingerprints: Counter[str], settings: ExportSettings) -> str | None:
    """Why the rollouts must not go into one dataset as they are, and how to fix it; None when they may."""
    if settings.allow_mixed:
        return None
    if len(agents) > 1:
        listed = ", ".join(f"{name} ({count:,})" for name, count in agents.most_common())
        return (
            f"the input mixes rollouts of {len(agents)} agents (environments): {listed}. One dataset of "
            f"several environments is rarely meant: pick one with +agent_name={agents.most_common(1)[0][0]}, or "
            "pass +allow_mixed=true to export them together."
        )
    if len(fingerprints) > 1:
        listed = ", ".join(f"{name} ({count:,})" for name, count in fingerprints.most_common())
        return (
            f"the input mixes rollouts collected with {len(fingerprints)} different settings (fingerprints): "
            f"{listed}; a changed model, sampling parameter or agent setting makes a new fingerprint (each "
            "collection's settings are in its `<output stem>.settings.json`). Export one collection's file, pick "
            f"one with +fingerprint={fingerprints.most_common(1)[0][0]}, or pass +allow_mixed=true to export them "
            "together."
        )
    return None


def _nothing_written(rows: int, files: RolloutFiles, export_format: ExportFormat) -> str | None:
    if rows:
        return None
    why = [*files.report.explained(), *export_format.dropped.explained()]
    return (
        f"nothing to write: {files.report.lines:,} lines read, {files.report.records:,} usable rollouts, no "
        f"{export_format.name} row made of them"
        + (": " + "; ".join(why) if why else "")
        + ". Check +input_jsonl_fpath and the filters."
    )


def _hub_preflight(settings: ExportSettings) -> str | None:
    """Before any work: the hub library and the token a push needs (a dry run needs neither)."""
    if settings.push_to_hub is None or settings.push_to_hub_dry_run_dir is not None:
        return None
    import_extra("huggingface_hub", "train", needed_for="+push_to_hub")
    return hub.token_from_env()


def _to_hub(settings: ExportSettings, summary: ExportSummary, token: str | None) -> JSONObject:
    assert settings.push_to_hub is not None
    card = hub.dataset_card(settings.push_to_hub, settings.format, settings.output_kind, summary.to_json())
    files = hub.hub_files(settings.output_fpath, settings.output_kind, card)
    if settings.push_to_hub_dry_run_dir is not None:
        hub.write_dry_run(files, settings.push_to_hub_dry_run_dir)
        return {"repo_id": settings.push_to_hub, "dry_run_dir": str(settings.push_to_hub_dry_run_dir)}
    assert token is not None
    url = hub.push(
        files, settings.push_to_hub, token=token, private=settings.hub_private, endpoint=settings.hub_endpoint
    )
    return {"repo_id": settings.push_to_hub, "url": url}
