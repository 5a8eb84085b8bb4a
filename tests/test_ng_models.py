"""`ng_models`: the catalog of `/models` with prices per million tokens, context and tool support, filtered and
sorted; a dated on-disk cache when the endpoint is unreachable; and what a dataset would cost on each model,
estimated from sample rollouts. Against the OpenRouter emulator over real loopback HTTP."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from nemo_gym.cli.models import main
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.upstream.catalog import cache_file

KEY = "sk-or-v1-NEVER-PRINT-THIS-KEY-0123456789"
ALL_IDS = [
    "anthropic/claude-3.5-sonnet",
    "google/gemini-pro",
    "meta-llama/llama-3.1-8b-instruct",
    "meta-llama/llama-3.1-8b-instruct:free",
    "mistralai/mixtral-8x7b-instruct",
    "openai/gpt-4-turbo",
    "openai/gpt-4o-mini",
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own, so a developer's env.yaml is never read."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return f"+cache_dir={tmp_path / 'cache'}"


@pytest.fixture
def emulator() -> Iterator[tuple[OpenRouterEmulator, str]]:
    """(the emulator, its API root ending in /api/v1) with the default catalog."""
    emulated = OpenRouterEmulator(EmulatorConfig())
    with serve_in_thread(emulated.app()) as url:
        yield emulated, url + "/api/v1"


@pytest.fixture
def url(emulator: tuple[OpenRouterEmulator, str]) -> str:
    return emulator[1]


def ng_models(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    main(list(args))
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    return captured.out


def ng_models_fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one-line error of a run that exits 2."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    return captured.err


def rows(out: str) -> dict[str, list[str]]:
    """The table's rows by model id: the cells after the id."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model "))
    return {line.split()[0]: line.split()[1:] for line in lines[start + 1 : -1]}


def write_records(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def record(input_tokens: int, output_tokens: int, error: str | None = None) -> dict[str, Any]:
    """The fields of a line of ng_collect_rollouts' output that the estimate reads."""
    return {
        "row_index": 0,
        "repeat_index": 0,
        "reward": None if error else 1.0,
        "error": error,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


# ------------------------------------------------------------------------------------------------ the listing


def test_lists_every_model_with_prices_per_million_tokens_context_and_tool_support(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ng_models(capsys, f"+base_url={url}", cache)

    lines = out.splitlines()
    assert lines[0].startswith(f"Catalog: {url}, live, fetched {datetime.now(UTC):%Y-%m-%d}")
    assert lines[1].split() == ["model", "prompt", "$/M", "completion", "$/M", "context", "tools"]
    assert lines[-1] == "7 of 7 models"
    table = rows(out)
    assert list(table) == ALL_IDS  # sorted by id by default
    assert table["openai/gpt-4o-mini"] == ["0.15", "0.6", "128000", "yes"]  # 0.00000015 and 0.0000006 per token
    assert table["openai/gpt-4-turbo"] == ["10", "30", "128000", "yes"]
    assert table["anthropic/claude-3.5-sonnet"] == ["3", "15", "200000", "yes"]
    assert table["google/gemini-pro"] == ["0.125", "0.375", "32760", "yes"]
    assert table["meta-llama/llama-3.1-8b-instruct:free"] == ["0", "0", "131072", "yes"]
    assert table["mistralai/mixtral-8x7b-instruct"] == ["0.54", "0.54", "32768", "no"]


def test_search_is_a_case_insensitive_substring_of_the_id_or_the_name(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert list(rows(ng_models(capsys, f"+base_url={url}", cache, "+search=LLAMA"))) == [
        "meta-llama/llama-3.1-8b-instruct",
        "meta-llama/llama-3.1-8b-instruct:free",
    ]
    # Only the names say "GPT-4 Turbo" (the id is gpt-4-turbo) and "Anthropic:".
    assert list(rows(ng_models(capsys, f"+base_url={url}", cache, "+search='gpt-4 TURBO'"))) == ["openai/gpt-4-turbo"]
    out = ng_models(capsys, f"+base_url={url}", cache, "+search=Anthropic:")
    assert list(rows(out)) == ["anthropic/claude-3.5-sonnet"]
    assert out.splitlines()[-1] == "1 of 7 models"


def test_tools_true_keeps_only_models_that_list_tool_support(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ng_models(capsys, f"+base_url={url}", cache, "+tools=true")

    assert list(rows(out)) == [i for i in ALL_IDS if i != "mistralai/mixtral-8x7b-instruct"]
    assert out.splitlines()[-1] == "6 of 7 models"


def test_max_price_caps_both_sides_and_the_one_sided_caps_only_their_side(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def ids(*args: str) -> list[str]:
        return list(rows(ng_models(capsys, f"+base_url={url}", cache, *args)))

    # gpt-4o-mini's prompt price (0.15) passes 0.5 but its completion price (0.6) does not.
    assert ids("+max_price=0.5") == [
        "google/gemini-pro",
        "meta-llama/llama-3.1-8b-instruct",
        "meta-llama/llama-3.1-8b-instruct:free",
    ]
    assert ids("+max_price=0.6") == [
        "google/gemini-pro",
        "meta-llama/llama-3.1-8b-instruct",
        "meta-llama/llama-3.1-8b-instruct:free",
        "mistralai/mixtral-8x7b-instruct",
        "openai/gpt-4o-mini",
    ]
    assert ids("+max_prompt_price=0.15") == [
        "google/gemini-pro",
        "meta-llama/llama-3.1-8b-instruct",
        "meta-llama/llama-3.1-8b-instruct:free",
        "openai/gpt-4o-mini",
    ]
    assert ids("+max_completion_price=15") == [i for i in ALL_IDS if i != "openai/gpt-4-turbo"]
    assert ids("+max_price=0") == ["meta-llama/llama-3.1-8b-instruct:free"]
    assert ids("+tools=true", "+max_price=0.6", "+search=in") == [
        "google/gemini-pro",
        "meta-llama/llama-3.1-8b-instruct",
        "meta-llama/llama-3.1-8b-instruct:free",
        "openai/gpt-4o-mini",
    ]


def test_sort_by_price_is_prompt_plus_completion_ascending_and_by_context_descending(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def ids(*args: str) -> list[str]:
        return list(rows(ng_models(capsys, f"+base_url={url}", cache, *args)))

    # Per million, prompt + completion: 0, 0.07, 0.5, 0.75, 1.08, 18, 40.
    assert ids("+sort=price") == [
        "meta-llama/llama-3.1-8b-instruct:free",
        "meta-llama/llama-3.1-8b-instruct",
        "google/gemini-pro",
        "openai/gpt-4o-mini",
        "mistralai/mixtral-8x7b-instruct",
        "anthropic/claude-3.5-sonnet",
        "openai/gpt-4-turbo",
    ]
    assert ids("+sort=completion_price")[3:5] == ["mistralai/mixtral-8x7b-instruct", "openai/gpt-4o-mini"]
    assert ids("+sort=prompt_price")[3:5] == ["openai/gpt-4o-mini", "mistralai/mixtral-8x7b-instruct"]
    assert ids("+sort=context") == [
        "anthropic/claude-3.5-sonnet",
        "meta-llama/llama-3.1-8b-instruct",
        "meta-llama/llama-3.1-8b-instruct:free",
        "openai/gpt-4-turbo",
        "openai/gpt-4o-mini",
        "mistralai/mixtral-8x7b-instruct",
        "google/gemini-pro",
    ]


def test_limit_shows_the_first_rows_and_the_count_says_how_many_matched(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ng_models(capsys, f"+base_url={url}", cache, "+sort=price", "+limit=2", "+tools=true")

    assert list(rows(out)) == ["meta-llama/llama-3.1-8b-instruct:free", "meta-llama/llama-3.1-8b-instruct"]
    assert out.splitlines()[-1] == "2 of 7 models (6 matched, +limit=2)"


def test_unknown_prices_show_a_dash_sort_last_and_never_pass_a_price_filter(
    workdir: Path, cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A variable-priced router ("-1"), and an entry without prices or parameters, as some endpoints list them."""
    app = FastAPI()

    @app.get("/api/v1/models")
    def models() -> dict[str, Any]:
        return {
            "data": [
                {
                    "id": "openrouter/auto",
                    "name": "Auto Router",
                    "context_length": 2000000,
                    "pricing": {"prompt": "-1", "completion": "-1"},
                    "supported_parameters": ["tools"],
                },
                {"id": "local/bare"},
                {
                    "id": "cheap/model",
                    "name": "Cheap",
                    "context_length": 8192,
                    "pricing": {"prompt": "0.0000001", "completion": "0.0000002"},
                    "supported_parameters": [],
                },
            ]
        }

    with serve_in_thread(app) as root:
        base = f"+base_url={root}/api/v1"
        table = rows(ng_models(capsys, base, cache, "+sort=price"))
        assert list(table) == ["cheap/model", "local/bare", "openrouter/auto"]
        assert table["cheap/model"] == ["0.1", "0.2", "8192", "no"]
        assert table["local/bare"] == ["-", "-", "-", "?"]
        assert table["openrouter/auto"] == ["-", "-", "2000000", "yes"]
        assert list(rows(ng_models(capsys, base, cache, "+max_price=1000"))) == ["cheap/model"]
        assert list(rows(ng_models(capsys, base, cache, "+max_completion_price=1000"))) == ["cheap/model"]
        assert list(rows(ng_models(capsys, base, cache, "+tools=true"))) == ["openrouter/auto"]


def test_json_has_the_source_the_date_and_every_models_figures(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(ng_models(capsys, f"+base_url={url}", cache, "+format=json", "+sort=price", "+limit=3"))

    assert document["source"] == "live"
    assert document["base_url"] == url
    assert document["cache_reason"] is None
    assert abs(datetime.fromisoformat(document["fetched_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert (document["models_in_catalog"], document["models_matched"]) == (7, 7)
    assert document["estimate"] is None
    assert [m["id"] for m in document["models"]] == [
        "meta-llama/llama-3.1-8b-instruct:free",
        "meta-llama/llama-3.1-8b-instruct",
        "google/gemini-pro",
    ]
    assert document["models"][2] == {
        "id": "google/gemini-pro",
        "name": "Google: Gemini Pro 1.0",
        "prompt_usd_per_million": 0.125,
        "completion_usd_per_million": 0.375,
        "context_length": 32760,
        "supports_tools": True,
    }


def test_csv_has_a_header_and_one_row_per_model(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main([f"+base_url={url}", cache, "+format=csv", "+search=mi"])
    captured = capsys.readouterr()

    table = list(csv.DictReader(io.StringIO(captured.out)))
    assert [r["id"] for r in table] == ["google/gemini-pro", "mistralai/mixtral-8x7b-instruct", "openai/gpt-4o-mini"]
    assert table[1] == {
        "id": "mistralai/mixtral-8x7b-instruct",
        "name": "Mistral: Mixtral 8x7B Instruct",
        "prompt_usd_per_million": "0.54",
        "completion_usd_per_million": "0.54",
        "context_length": "32768",
        "supports_tools": "false",
    }
    source, count = captured.err.splitlines()  # the notes go to stderr, so stdout stays a clean CSV
    assert source.startswith(f"Catalog: {url}, live, fetched ")
    assert count == "3 of 7 models"


# ------------------------------------------------------------------------------------------------ the cache


def test_an_unreachable_endpoint_falls_back_to_the_cache_and_says_when_it_was_fetched_and_why(
    workdir: Path, cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1"
    with serve_in_thread(OpenRouterEmulator(EmulatorConfig()).app(), port=port):
        live = ng_models(capsys, f"+base_url={url}", cache)
    fetched = live.splitlines()[0].removeprefix(f"Catalog: {url}, live, fetched ")

    out = ng_models(capsys, f"+base_url={url}", cache)  # nothing listens on the port any more

    header = out.splitlines()[0]
    assert header.startswith(f"Catalog: {url}, cached {fetched} ({url}/models could not be fetched (ConnectError")
    assert rows(out) == rows(live)
    document = json.loads(ng_models(capsys, f"+base_url={url}", cache, "+format=json"))
    assert document["source"] == "cache"
    assert document["cache_reason"].startswith(f"{url}/models could not be fetched")
    assert f"{datetime.fromisoformat(document['fetched_at']):%Y-%m-%d %H:%M} UTC" == fetched


def test_offline_reads_only_the_cache(
    workdir: Path, cache: str, emulator: tuple[OpenRouterEmulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    emulated, url = emulator
    ng_models(capsys, f"+base_url={url}", cache)
    asked = len(emulated.requests)

    out = ng_models(capsys, f"+base_url={url}", cache, "+offline=true", "+search=gpt-4o")

    assert len(emulated.requests) == asked
    assert out.splitlines()[0].startswith(f"Catalog: {url}, cached ")
    assert out.splitlines()[0].endswith(" UTC (offline mode)")
    assert rows(out) == {"openai/gpt-4o-mini": ["0.15", "0.6", "128000", "yes"]}


def test_no_cache_and_an_unreachable_endpoint_is_one_error_naming_the_cache_path(workdir: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/v1"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nemo_gym.cli.models",
            f"+base_url={url}",
            f"+cache_dir={tmp_path / 'cache'}",
            f"+api_key={KEY}",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"error: No model catalog for {url}: {url}/models could not be fetched")
    assert str(cache_file(url, tmp_path / "cache")) in done.stderr
    assert "Traceback" not in done.stderr
    assert KEY not in done.stderr


def test_offline_without_a_cache_says_so(workdir: Path, cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = ng_models_fails(capsys, "+base_url=http://127.0.0.1:9/api/v1", cache, "+offline=true")

    assert "offline mode, and there is no cached copy at " in err


# ------------------------------------------------------------------------------------------------ keys and defaults


def test_base_url_and_key_default_to_the_policy_settings_of_env_yaml_and_the_key_is_never_shown(
    workdir: Path, cache: str, emulator: tuple[OpenRouterEmulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    emulated, url = emulator
    (workdir / "env.yaml").write_text(
        f"policy_base_url: {url}\npolicy_api_key: {KEY}\npolicy_model_name: openai/gpt-4o-mini\n"
    )

    out = ng_models(capsys, cache, "+format=json")  # ng_models asserts the key is absent from stdout and stderr

    assert json.loads(out)["base_url"] == url
    assert emulated.requests[-1].path == "/api/v1/models"
    assert emulated.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_a_key_on_the_command_line_never_shows_up_in_errors(
    workdir: Path, cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = ng_models_fails(capsys, f"+api_key={KEY}", f"+base_url=http://127.0.0.1:{free_port()}/api/v1", cache)
    assert "No model catalog" in err
    ng_models_fails(capsys, f"+api_key={KEY}", "+sort=nope", cache)
    ng_models_fails(capsys, f"+api_key=[{KEY}]", cache)


# ------------------------------------------------------------------------------------------------ settings


def test_an_unknown_setting_is_an_error_with_a_did_you_mean(
    workdir: Path, cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "Unknown setting +serch (did you mean +search?)" in ng_models_fails(capsys, "+serch=gpt", cache)
    assert "(did you mean +max_price?)" in ng_models_fails(capsys, "+max_prise=1", cache)
    assert "(did you mean +estimate_from?)" in ng_models_fails(capsys, "+estimate_form=r.jsonl", cache)


def test_a_bad_value_is_one_line_that_says_what_to_pass(
    workdir: Path, cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        "+sort='cheapest' is not valid: pass one of id, price, prompt_price, completion_price, context, "
        "estimate" in ng_models_fails(capsys, "+sort=cheapest", cache)
    )
    assert "+format='xml' is not valid: pass table, json or csv" in ng_models_fails(capsys, "+format=xml", cache)
    assert "+max_price='cheap' is not valid: pass USD per million tokens" in ng_models_fails(
        capsys, "+max_price=cheap", cache
    )
    assert "+limit=0 is not valid: pass a whole number >= 1" in ng_models_fails(capsys, "+limit=0", cache)
    assert "+base_url='openrouter.ai' is not valid: pass the API root with its scheme" in ng_models_fails(
        capsys, "+base_url=openrouter.ai", cache
    )
    assert "+sort=estimate needs +estimate_from=" in ng_models_fails(capsys, "+sort=estimate", cache)
    assert "add +estimate_from=" in ng_models_fails(capsys, "+dataset_rows=10", cache)


# ------------------------------------------------------------------------------------------------ the estimate


def test_estimates_the_cost_per_rollout_and_of_the_dataset_from_sample_rollouts(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    records = write_records(
        workdir / "rollouts.jsonl",
        [
            record(1000, 100),
            record(2000, 200),
            "",
            record(3000, 300),
            record(900_000, 900_000, error="HTTP 429 from the model server"),  # failed: not part of the mean
        ],
    )
    (workdir / "dataset.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3}\n{"a": 4}\n{"a": 5}\n\n')
    args = [
        f"+base_url={url}",
        cache,
        "+estimate_from=rollouts.jsonl",
        "+input_jsonl_fpath=dataset.jsonl",
        "+num_repeats=2",
    ]

    out = ng_models(capsys, *args)

    estimate = out.splitlines()[1]
    assert estimate.startswith(
        f"Estimate from 3 sample rollouts in {records} (skipped 1 failed): 2,000 input + "
        "200 output tokens per rollout on average; dataset 5 rows x 2 repeats = 10 rollouts."
    )
    assert "other tokenizers and answer at other lengths" in estimate
    assert out.splitlines()[2].endswith("tools  est. $/rollout  est. $ total")
    table = rows(out)
    # 2000 x 0.15 / 1e6 + 200 x 0.6 / 1e6 = 0.00042 per rollout; x 10 rollouts
    assert table["openai/gpt-4o-mini"] == ["0.15", "0.6", "128000", "yes", "0.00042", "0.0042"]
    # 2000 x 10 / 1e6 + 200 x 30 / 1e6 = 0.026 per rollout; x 10 rollouts
    assert table["openai/gpt-4-turbo"] == ["10", "30", "128000", "yes", "0.026", "0.26"]
    assert list(table) == [
        "meta-llama/llama-3.1-8b-instruct:free",
        "meta-llama/llama-3.1-8b-instruct",
        "google/gemini-pro",
        "openai/gpt-4o-mini",
        "mistralai/mixtral-8x7b-instruct",
        "anthropic/claude-3.5-sonnet",
        "openai/gpt-4-turbo",
    ]  # cheapest estimate first

    document = json.loads(ng_models(capsys, *args, "+format=json"))
    assert document["estimate"] | {"caveat": None} == {
        "records_path": str(records),
        "sample_rollouts": 3,
        "failed_skipped": 1,
        "mean_input_tokens": 2000,
        "mean_output_tokens": 200,
        "dataset_rows": 5,
        "num_repeats": 2,
        "rollouts": 10,
        "caveat": None,
    }
    by_id = {m["id"]: m for m in document["models"]}
    assert by_id["openai/gpt-4o-mini"]["estimate_usd_per_rollout"] == pytest.approx(0.00042, rel=1e-12)
    assert by_id["openai/gpt-4o-mini"]["estimate_usd_total"] == pytest.approx(0.0042, rel=1e-12)
    assert by_id["openai/gpt-4-turbo"]["estimate_usd_per_rollout"] == pytest.approx(0.026, rel=1e-12)
    assert by_id["openai/gpt-4-turbo"]["estimate_usd_total"] == pytest.approx(0.26, rel=1e-12)


def test_dataset_rows_sets_the_size_and_without_a_size_only_the_cost_per_rollout_is_shown(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(workdir / "rollouts.jsonl", [record(1500, 250), record(2500, 150)])
    base = [f"+base_url={url}", cache, "+estimate_from=rollouts.jsonl", "+search=openai"]

    # 2000 x 10 / 1e6 + 200 x 30 / 1e6 = 0.026 per rollout; x 1000 rows x 3 repeats
    sized = rows(ng_models(capsys, *base, "+dataset_rows=1000", "+num_repeats=3"))
    assert sized["openai/gpt-4-turbo"][-2:] == ["0.026", "78"]
    assert sized["openai/gpt-4o-mini"][-2:] == ["0.00042", "1.26"]

    (workdir / "empty.jsonl").write_text("\n\n")
    assert "has no rows" in ng_models_fails(capsys, *base, "+input_jsonl_fpath=empty.jsonl")

    out = ng_models(capsys, *base)
    assert "no dataset size (+input_jsonl_fpath=... or +dataset_rows=N), so per rollout only" in out
    assert "total" not in out.splitlines()[2]
    assert rows(out)["openai/gpt-4-turbo"] == ["10", "30", "128000", "yes", "0.026"]


def test_a_malformed_rollout_record_is_an_error_naming_the_file_and_line(
    workdir: Path, cache: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    records = write_records(workdir / "rollouts.jsonl", [record(10, 10), "", '{"usage": {"input_tokens": 1'])
    base = [f"+base_url={url}", cache, "+estimate_from=rollouts.jsonl"]

    assert f"{records}:3: not valid JSON" in ng_models_fails(capsys, *base)

    write_records(records, [record(10, 10), {"error": None, "usage": {"input_tokens": 5}}])
    assert f"{records}:2: the record has no usage with input_tokens and output_tokens" in ng_models_fails(capsys, *base)

    write_records(records, [record(10, 10, error="boom")])
    assert "has no successful rollout records (1 failed)" in ng_models_fails(capsys, *base)
    assert "Cannot read +estimate_from=" in ng_models_fails(
        capsys, f"+base_url={url}", cache, "+estimate_from=missing.jsonl"
    )
