"""ng_export's rate and memory on big rollout files: records/s on a million records, peak memory flat in file size.

    python bench/export.py [+records=1000000] [+small_records=100000] [+repeats=4]
                           [+runs=[read,sft:jsonl,sft:parquet,dpo:jsonl,rl:jsonl]] [+work_dir=<tmp>]
                           [+output=bench/results/export.json]

Writes a synthetic rollouts file (simple_weather-shaped records of about 1.9 KB: a tool call, its result and an
answer, usage, models, verifier fields and the input row; `repeats` rollouts per row with rewards 0, 0.5 and 1, so
DPO has pairs and RL non-zero advantages), then runs each export in its own process (so its peak RSS, `ru_maxrss`,
is its own): every run in `runs` on the big file, and the first export also on the first `small_records` records,
to show memory flat in the file's size. `read` only reads the rows (the shared reader, `RolloutFiles.rows()`), to
show what reading alone costs. Rates are per second of wall time and per second of the process's CPU time (the
second is what other load on the machine changes least). Prints one table and writes the figures as JSON.
Target: >= 20,000 records/s.
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.collection.records import build_record
from nemo_gym.config.overrides import parse_overrides
from nemo_gym.config.paths import project_root

DEFAULTS: dict[str, Any] = {
    "records": 1_000_000,
    "small_records": 100_000,
    "repeats": 4,
    "runs": ["read", "sft:jsonl", "sft:parquet", "dpo:jsonl", "rl:jsonl"],
    "work_dir": None,
    "output": "bench/results/export.json",
}
TARGET_RECORDS_PER_S = 20_000
CITIES = ("Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Quito", "Hanoi")
SYSTEM = (
    "You are a helpful weather assistant. Use the get_weather tool once for every city the user asks about, then "
    "answer in one or two sentences naming each city."
)
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name, e.g. Paris"}},
        "required": ["city"],
    },
    "strict": False,
}


def synthetic_record(row_index: int, repeat_index: int) -> dict[str, Any]:
    """One simple_weather-shaped record, built the way the collector builds them."""
    city = CITIES[row_index % len(CITIES)]
    called = city if (row_index + repeat_index) % 3 else CITIES[(row_index + 1) % len(CITIES)]
    reward = ((row_index + repeat_index) % 3) / 2
    row = {
        "id": f"weather-{row_index:07d}",
        "expected_cities": [city],
        "responses_create_params": {
            "input": [
                {"role": "developer", "content": SYSTEM},
                {"role": "user", "content": f"What's the weather like in {city} today?"},
            ],
            "tools": [TOOL],
        },
    }
    output = [
        {
            "id": f"fc_{row_index}_{repeat_index}",
            "type": "function_call",
            "status": "completed",
            "call_id": f"call_{repeat_index}",
            "name": "get_weather",
            "arguments": json.dumps({"city": called}),
        },
        {
            "type": "function_call_output",
            "call_id": f"call_{repeat_index}",
            "output": json.dumps({"city": called, "temperature_c": 18, "conditions": "sunny"}),
        },
        {
            "id": f"msg_{row_index}_{repeat_index}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": f"It is sunny and 18 C in {called}.", "annotations": []}],
        },
    ]
    usage = {
        "input_tokens": 180,
        "output_tokens": 40,
        "total_tokens": 220,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
        "cost": 0.00011,
        "calls": 2,
    }
    response = {
        "id": f"resp_{row_index}_{repeat_index}",
        "object": "response",
        "model": "stub/weather-model",
        "status": "completed",
        "output": output,
        "usage": usage,
        "nemo_gym": {"models": ["stub/weather-model"], "steps": 2, "stop_reason": "answered"},
    }
    return dict(
        build_record(
            row=row,
            row_index=row_index,
            repeat_index=repeat_index,
            agent_name="simple_weather_simple_agent",
            result={"reward": reward, "response": response, "called_cities": [called], "reasons": []},
            error=None,
            latency_s=0.42,
            fingerprint="0123456789abcdef",
            digest=hashlib.sha256(str(row_index).encode()).hexdigest(),
        )
    )


def write_files(big: Path, small: Path, records: int, small_records: int, repeats: int) -> float:
    """The big file and its first `small_records` records as the small one; mean bytes per record."""
    written = 0
    with big.open("wb") as out, small.open("wb") as out_small:
        for index in range(records):
            line = orjson.dumps(synthetic_record(index // repeats, index % repeats), option=orjson.OPT_APPEND_NEWLINE)
            out.write(line)
            if index < small_records:
                out_small.write(line)
            written += len(line)
    return written / max(records, 1)


def child(args: dict[str, Any]) -> None:
    """One export (or, for `read`, one pass of the reader) in this process; prints its figures as one JSON line."""
    import pyarrow  # noqa: F401 - what a Parquet run loads anyway, so the baseline RSS is comparable

    from nemo_gym.training.export import EXPORT_BUCKET_BYTES, export, fewer_collections
    from nemo_gym.training.export_settings import settings_from
    from nemo_gym.training.reading import RolloutFiles

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started, cpu_started = time.perf_counter(), time.process_time()
    if args["format"] == "read":
        files = RolloutFiles([args["input"]], bucket_bytes=EXPORT_BUCKET_BYTES)
        with fewer_collections():
            groups = sum(1 for _ in files.rows())
        lines, rows_written, output_mb = files.report.lines, groups, 0.0
    else:
        settings = settings_from(
            {"format": args["format"], "input_jsonl_fpath": args["input"], "output_fpath": args["output"]}
        )
        summary = export(settings)
        lines, rows_written = summary.read["lines"], summary.rows_written
        output_mb = Path(args["output"]).stat().st_size / 1e6
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(
        json.dumps(
            {
                "lines": lines,
                "rows_written": rows_written,
                "wall_time_s": round(wall, 2),
                "cpu_time_s": round(cpu, 2),
                "records_per_s": round(lines / wall, 1),
                "records_per_cpu_s": round(lines / cpu, 1),
                "baseline_rss_mb": round(baseline, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "output_mb": round(output_mb, 1),
            }
        )
    )


def run_one(fmt: str, kind: str, source: Path, work: Path) -> dict[str, Any]:
    output = work / f"{source.stem}.{fmt}.{kind}"
    args = {"format": fmt, "input": str(source), "output": str(output)}
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=project_root(),
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        sys.exit(f"export {fmt}:{kind} of {source} failed:\n{result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    output.unlink(missing_ok=True)
    return {"format": fmt, "output_format": kind, "input": source.name, **figures}


def run(settings: dict[str, Any], work: Path) -> dict[str, Any]:
    big, small = work / "rollouts_big.jsonl", work / "rollouts_small.jsonl"
    started = time.perf_counter()
    mean_bytes = write_files(big, small, settings["records"], settings["small_records"], settings["repeats"])
    generated_s = time.perf_counter() - started
    runs = []
    for spec in settings["runs"]:
        fmt, _, kind = str(spec).partition(":")
        runs.append(run_one(fmt, kind or ("" if fmt == "read" else "jsonl"), big, work))
    exports = [r for r in runs if r["format"] != "read"] or runs
    small_run = run_one(exports[0]["format"], exports[0]["output_format"], small, work)
    return {
        "records": settings["records"],
        "small_records": settings["small_records"],
        "repeats": settings["repeats"],
        "mean_record_bytes": round(mean_bytes),
        "file_mb": round(big.stat().st_size / 1e6, 1),
        "generate_s": round(generated_s, 1),
        "runs": runs,
        "memory": {"small": small_run, "big": exports[0]},
        "target_records_per_s": TARGET_RECORDS_PER_S,
    }


def table(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['records']:,} records of {figures['mean_record_bytes']:,} bytes on average "
        f"({figures['file_mb']:,} MB, {figures['repeats']} rollouts per row), generated in {figures['generate_s']} s",
        "",
        f"{'export':<14} {'input':<22} {'records/s':>10} {'per CPU s':>10} {'wall s':>8} {'rows out':>10} "
        f"{'peak RSS MB':>12}",
    ]
    for run_ in [*figures["runs"], figures["memory"]["small"]]:
        name = run_["format"] + (":" + run_["output_format"] if run_["format"] != "read" else "")
        lines.append(
            f"{name:<14} {run_['input']:<22} {run_['records_per_s']:>10,.0f} {run_['records_per_cpu_s']:>10,.0f} "
            f"{run_['wall_time_s']:>8} {run_['rows_written']:>10,} {run_['peak_rss_mb']:>12}"
        )
    small, big = figures["memory"]["small"], figures["memory"]["big"]
    lines += [
        "",
        f"peak RSS, {small['lines']:,} records: {small['peak_rss_mb']} MB; {big['lines']:,} records: "
        f"{big['peak_rss_mb']} MB (after imports: {big['baseline_rss_mb']} MB)",
        f"target: >= {figures['target_records_per_s']:,} records/s",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return
    settings = {**DEFAULTS, **parse_overrides(sys.argv[1:])}
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        sys.exit(f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}")
    with tempfile.TemporaryDirectory(prefix="nemo_gym_bench_export_", dir=settings["work_dir"]) as tmp:
        figures = run(settings, Path(tmp))
    output = project_root() / settings["output"]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2) + "\n")
    print(table(figures))
    print(f"figures written to {output}")


if __name__ == "__main__":
    main()
