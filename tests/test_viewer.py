"""ng_viewer as specifications: its JSON API over real HTTP, the written page, bad input, and the command itself.

The rollouts come from real simple_weather collections against the OpenRouter emulator (two models, tool calls,
varied rewards) plus a failed record and one whose text is markup (nemo_gym.viewer.sample).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.cli.viewer import main
from nemo_gym.protocol.types import RECORD_KEYS
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.viewer_sample import FAILED_ERROR, MARKUP, MARKUP_MODEL, MODELS, write_sample
from nemo_gym.viewer import Query, RolloutIndex, build_app, write_html

DATA_BLOCK = re.compile(r'<script type="application/json" id="viewer-data">(.*?)</script>', re.DOTALL)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="module")
def records(sample: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sample.read_text().splitlines()]


@contextmanager
def serve(path: Path) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(build_app(RolloutIndex.load(path))) as url,
        httpx.Client(base_url=url, timeout=10, trust_env=False) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def api(sample: Path) -> Iterator[httpx.Client]:
    with serve(sample) as client:
        yield client


def rows(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/api/rollouts", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return response.json()


def texts(record: dict[str, Any]) -> str:
    """Everything a search looks at, the plain way: the prompt and the trajectory as JSON text."""
    prompt = record["input"]["responses_create_params"]["input"]
    output = (record.get("response") or {}).get("output") or []
    return json.dumps([prompt, output], ensure_ascii=False).lower()


# ---------------------------------------------------------------- the API


def test_summaries_list_every_record_in_file_order_with_its_figures(
    api: httpx.Client, records: list[dict[str, Any]]
) -> None:
    body = rows(api)
    assert body["total"] == body["matched"] == len(records) == 2 * 12 + 2
    for position, (row, record) in enumerate(zip(body["rows"], records, strict=True)):
        usage = record["usage"] or {}
        assert row["index"] == position and row["line"] == position + 1
        assert (row["row_index"], row["repeat_index"]) == (record["row_index"], record["repeat_index"])
        assert row["reward"] == record["reward"] and row["models"] == record["models"]
        assert row["cost_usd"] == record["cost_usd"] and row["latency_s"] == record["latency_s"]
        assert (row["input_tokens"], row["output_tokens"]) == (usage.get("input_tokens"), usage.get("output_tokens"))
        assert row["failed"] is (record["error"] is not None)
    failed = body["rows"][-2]
    assert failed["error"] == FAILED_ERROR.splitlines()[0]  # short: the first line
    assert failed["question"] == "Weather in Oslo?"  # a prompt given as a plain string
    assert {r["reward"] for r in body["rows"] if not r["failed"]} >= {0.2, 1.0}, "rewards should vary"


def test_reward_bounds_keep_rewards_within_them_and_leave_out_failed_rollouts(
    api: httpx.Client, records: list[dict[str, Any]]
) -> None:
    body = rows(api, reward_min=0.3, reward_max=0.9)
    expected = [i for i, r in enumerate(records) if r["reward"] is not None and 0.3 <= r["reward"] <= 0.9]
    assert 0 < len(expected) < len(records)
    assert [r["index"] for r in body["rows"]] == expected and body["matched"] == len(expected)
    perfect = rows(api, reward_min=1)
    assert perfect["matched"] == sum(r["reward"] == 1.0 for r in records) > 0
    assert all(r["reward"] == 1.0 for r in perfect["rows"])


def test_model_filter_keeps_the_rollouts_a_model_served(api: httpx.Client, records: list[dict[str, Any]]) -> None:
    meta = api.get("/api/meta").json()
    counts = {m["model"]: m["rollouts"] for m in meta["models"]}
    assert counts == {MODELS[0]: 13, MODELS[1]: 12, MARKUP_MODEL: 1}  # the markup record had both served
    for model, expected in counts.items():
        body = rows(api, model=model)
        assert body["matched"] == expected and all(model in r["models"] for r in body["rows"])
    assert rows(api, model=MARKUP_MODEL)["rows"][0]["index"] == len(records) - 1


def test_error_filter_splits_failed_from_succeeded(api: httpx.Client, records: list[dict[str, Any]]) -> None:
    failed = rows(api, error="failed")
    assert [r["index"] for r in failed["rows"]] == [len(records) - 2]
    assert [i for i, r in enumerate(records) if r["error"] is not None] == [len(records) - 2]
    assert records[-2]["error"] == FAILED_ERROR
    succeeded = rows(api, error="succeeded")
    assert succeeded["matched"] == len(records) - 1
    assert [r["index"] for r in succeeded["rows"]] == [i for i in range(len(records)) if i != len(records) - 2]
    assert rows(api, error="all")["matched"] == len(records)
    assert [r["index"] for r in rows(api, error="all")["rows"]] == list(range(len(records)))
    assert api.get("/api/rollouts", params={"error": "broken"}).status_code == 422


@pytest.mark.parametrize("search", ["TOKYO", "snow", "get_weather", "Oslo", "<script>", "zzz-nothing-like-this"])
def test_search_is_a_case_insensitive_substring_of_the_prompt_or_trajectory(
    api: httpx.Client, records: list[dict[str, Any]], search: str
) -> None:
    expected = [i for i, r in enumerate(records) if search.lower() in texts(r)]
    assert [r["index"] for r in rows(api, search=search)["rows"]] == expected
    if search in ("TOKYO", "get_weather"):
        assert 0 < len(expected) < len(records)


def test_filters_combine(api: httpx.Client, records: list[dict[str, Any]]) -> None:
    body = rows(api, model=MODELS[1], error="succeeded", reward_min=1, search="weather")
    expected = [
        i
        for i, r in enumerate(records)
        if MODELS[1] in r["models"] and r["error"] is None and r["reward"] >= 1 and "weather" in texts(r)
    ]
    assert expected and [r["index"] for r in body["rows"]] == expected


def test_pages_and_orders(api: httpx.Client, records: list[dict[str, Any]]) -> None:
    pages = [api.get("/api/rollouts", params={"limit": 10, "offset": offset}).json() for offset in (0, 10, 20, 30)]
    assert [len(p["rows"]) for p in pages] == [10, 10, 6, 0]
    assert [r["index"] for p in pages for r in p["rows"]] == list(range(len(records)))
    assert all(p["matched"] == len(records) for p in pages)

    by_reward = rows(api, sort="-reward")["rows"]
    rewards = [r["reward"] for r in by_reward]
    assert rewards[-1] is None, "a rollout without a reward goes last"
    assert rewards[:-1] == sorted(rewards[:-1], reverse=True)
    by_cost = [r["cost_usd"] for r in rows(api, sort="cost_usd")["rows"]]
    assert by_cost[:-1] == sorted(by_cost[:-1]) and by_cost[-1] is None

    for bad in ({"sort": "colour"}, {"limit": 0}, {"limit": 5000}, {"offset": -1}):
        response = api.get("/api/rollouts", params=bad)
        assert response.status_code == 422 and response.json()["error"]["message"], bad
    assert "reward" in api.get("/api/rollouts", params={"sort": "colour"}).json()["error"]["message"]


def test_a_rollout_is_served_whole_by_its_index(api: httpx.Client, records: list[dict[str, Any]]) -> None:
    for index in (0, 13, len(records) - 1):
        body = api.get(f"/api/rollouts/{index}").json()
        assert body == {"index": index, "line": index + 1, "record": records[index]}
    missing = api.get(f"/api/rollouts/{len(records)}")
    assert missing.status_code == 404
    assert f"no rollout {len(records)}" in missing.json()["error"]["message"]


def test_meta_names_the_file_and_the_keys_that_are_not_the_verifiers(api: httpx.Client, sample: Path) -> None:
    meta = api.get("/api/meta").json()
    assert meta["path"] == str(sample) and meta["total"] == 26 and meta["failed"] == 1
    assert meta["warnings"] == [] and meta["warnings_total"] == 0
    assert meta["record_keys"] == list(RECORD_KEYS)
    assert 0 < meta["reward_min"] < meta["reward_max"] == 1.0


def test_the_page_allows_only_its_own_script_and_style(api: httpx.Client) -> None:
    response = api.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp
    script = re.search(r"<script>(.*?)</script>", response.text, re.DOTALL)
    assert script is not None and _sha256(script[1]) in csp
    assert DATA_BLOCK.search(response.text)[1] == "null"  # served: the page asks the API


def test_requests_naming_another_host_are_refused(api: httpx.Client) -> None:
    """A page on another site cannot read the rollouts by pointing its own name at 127.0.0.1 (DNS rebinding)."""
    assert api.get("/api/meta", headers={"Host": "attacker.example"}).status_code == 400
    assert api.get("/api/meta", headers={"Host": "localhost"}).status_code == 200


def test_rollouts_appended_while_serving_show_up_and_a_rewrite_is_reindexed(sample: Path, tmp_path: Path) -> None:
    path = tmp_path / "growing.jsonl"
    lines = sample.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]))
    with serve(path) as api:
        assert rows(api)["total"] == 5
        with path.open("a") as handle:
            handle.write(lines[5])
            handle.write(lines[6][:40])  # a rollout being written right now
        assert rows(api)["total"] == 6
        assert api.get("/api/meta").json()["warnings"] == [
            {"line": 7, "message": "the last line is incomplete (no newline and not valid JSON): still being written?"}
        ]
        with path.open("a") as handle:
            handle.write(lines[6][40:])
        body = rows(api)
        assert body["total"] == 7 and api.get("/api/meta").json()["warnings_total"] == 0
        assert api.get("/api/rollouts/6").json()["record"] == json.loads(lines[6])
        path.write_text("".join(lines[10:13]))  # e.g. a re-run with +overwrite=true
        assert rows(api)["total"] == 3
        assert api.get("/api/rollouts/0").json()["record"] == json.loads(lines[10])


# ---------------------------------------------------------------- the written page


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_written_page_is_self_contained_and_embeds_the_records_safely(
    sample: Path, records: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out" / "rollouts.html"
    main([f"+jsonl_fpath={sample}", f"+output_html={output}"])
    assert f"Wrote {output}" in capsys.readouterr().out
    page = output.read_text(encoding="utf-8")

    data = DATA_BLOCK.search(page)
    assert data is not None
    embedded = json.loads(data[1])
    assert embedded["records"] == records
    assert [s["index"] for s in embedded["summaries"]] == list(range(len(records)))
    assert embedded["meta"]["total"] == len(records) and len(embedded["search"]) == len(records)

    # The markup in the records cannot close the data block or open an element: only the page's two scripts end.
    assert page.count("</script>") == 2 and MARKUP not in page and "<img" not in page
    code = DATA_BLOCK.sub("", page)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", code), "the page must not load anything"
    assert not re.search(r"<(link|iframe|object|embed|img|base)\b", code, re.IGNORECASE)
    assert not re.search(r"\b(src|href|action)\s*=", code, re.IGNORECASE)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    script = re.search(r"<script>(.*?)</script>", code, re.DOTALL)
    style = re.search(r"<style>(.*?)</style>", code, re.DOTALL)
    assert csp and script and style
    policy = html.unescape(csp[1])
    assert _sha256(script[1]) in policy and _sha256(style[1]) in policy and "unsafe-inline" not in policy


def test_written_page_is_refused_above_the_row_cap_unless_max_rows_allows(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "page.html"
    with pytest.raises(SystemExit) as exit_info:
        main([f"+jsonl_fpath={sample}", f"+output_html={output}", "+max_rows=10"])
    assert exit_info.value.code == 2 and not output.exists()
    err = capsys.readouterr().err
    assert "has 26 rollouts" in err and "at most 10" in err and "+max_rows=26" in err and "Serve it instead" in err

    monkeypatch.setattr("nemo_gym.viewer.page.DEFAULT_MAX_HTML_ROWS", 20)
    with pytest.raises(SystemExit):
        main([f"+jsonl_fpath={sample}", f"+output_html={output}"])
    assert "at most 20" in capsys.readouterr().err
    main([f"+jsonl_fpath={sample}", f"+output_html={output}", "+max_rows=26"])
    assert output.is_file()


def test_the_rollouts_file_is_never_overwritten_by_the_page(sample: Path, tmp_path: Path) -> None:
    copy = tmp_path / "rollouts.jsonl"
    shutil.copy(sample, copy)
    with pytest.raises(Exception, match="is the rollouts file itself"):
        write_html(RolloutIndex.load(copy), copy)
    assert copy.read_bytes() == sample.read_bytes()


# ---------------------------------------------------------------- bad input


def run_failing(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Rollouts file not found: {path}. Pass the output of ng_collect_rollouts"),
        ("", "{path} is empty: it has no rollout records"),
        ("\n  \n\n", "{path} is empty: it has no rollout records"),
        (
            "not json\n[1]\n",
            "{path} has no rollout records: none of its 2 non-blank line(s) is a JSON object (first: "
            "{path}:1: not valid JSON",
        ),
    ],
    ids=["missing", "empty", "blank", "no-records"],
)
def test_unusable_files_fail_with_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "rollouts.jsonl"
    if content is not None:
        path.write_text(content)
    code, err = run_failing([f"+jsonl_fpath={path}"], capsys)
    assert code == 2 and message.format(path=path) in err and "Traceback" not in err


def test_a_directory_is_refused_with_the_files_it_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run1.jsonl").write_text("{}\n")
    code, err = run_failing([f"+jsonl_fpath={tmp_path}"], capsys)
    assert code == 2
    assert f"{tmp_path} is a directory (it holds run1.jsonl); +jsonl_fpath must name a rollouts JSONL file" in err


def test_lines_that_are_not_records_are_skipped_with_their_line_numbers(
    sample: Path, records: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample.read_text().splitlines()
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([lines[0], '{"reward": 1.0, "err', "", "[1, 2]", lines[1]]) + "\n")
    output = tmp_path / "mixed.html"
    main([f"+jsonl_fpath={path}", f"+output_html={output}"])
    captured = capsys.readouterr()
    assert f"warning: {path}:2: not valid JSON" in captured.err
    assert f"warning: {path}:4: a rollout record must be a JSON object, got list; skipped." in captured.err
    assert "2 rollouts (0 failed)" in captured.out
    embedded = json.loads(DATA_BLOCK.search(output.read_text())[1])
    assert [w["line"] for w in embedded["meta"]["warnings"]] == [2, 4]
    assert [s["line"] for s in embedded["summaries"]] == [1, 5]
    assert embedded["records"] == records[:2]
    with serve(path) as api:
        meta = api.get("/api/meta").json()
        assert [w["line"] for w in meta["warnings"]] == [2, 4] and meta["total"] == 2
        assert (meta["duplicated_rollouts"], meta["skipped_lines"]) == (0, 2)
        assert api.get("/api/rollouts/1").json()["line"] == 5


def test_rollouts_recorded_twice_are_warned_about_with_how_many_and_where(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample.read_text().splitlines()
    path = tmp_path / "twice.jsonl"
    # lines[12] is the same row as lines[0] run on the other model (other settings): not a duplicate
    path.write_text("\n".join([lines[0], lines[1], lines[12], lines[0], lines[1], lines[0]]) + "\n")
    first = json.loads(lines[0])
    message = (
        "3 record(s) repeat the rollout key of an earlier record with the same settings (2 rollout(s) recorded "
        f"more than once), e.g. row_hash {first['row_hash']} repeat_index {first['repeat_index']} on lines 1, 4 "
        "and 6; were two collectors writing this file at once? Every copy is listed."
    )
    output = tmp_path / "twice.html"
    main([f"+jsonl_fpath={path}", f"+output_html={output}"])
    captured = capsys.readouterr()
    assert f"warning: {path}:4: {message}" in captured.err.splitlines()
    assert "6 rollouts (0 failed)" in captured.out
    embedded = json.loads(DATA_BLOCK.search(output.read_text())[1])
    assert embedded["meta"]["warnings"] == [{"line": 4, "message": message}]
    with serve(path) as api:
        meta = api.get("/api/meta").json()
        assert meta["warnings"] == [{"line": 4, "message": message}] and meta["total"] == 6
        assert (meta["duplicated_rollouts"], meta["skipped_lines"]) == (2, 0)
        with path.open("a") as handle:  # a second writer still at it
            handle.write(lines[1] + "\n")
        assert rows(api)["total"] == 7
        assert api.get("/api/meta").json()["warnings"][0]["message"].startswith("4 record(s) repeat")


def test_a_record_missing_fields_is_still_shown(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text('{"reward": "high", "models": "m", "usage": [1], "input": "x"}\n')
    index = RolloutIndex.load(path)
    summary = index.select(Query())["rows"][0]
    assert summary["reward"] is None and summary["models"] == [] and summary["input_tokens"] is None
    assert index.record(0)["record"]["reward"] == "high"


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["+jsonl_fpth=x.jsonl"],
            "Unknown setting +jsonl_fpth (did you mean +jsonl_fpath?). ng_viewer settings: "
            "+host, +jsonl_fpath, +max_rows, +output_html, +port.",
        ),
        ([], "+jsonl_fpath is required: pass the rollouts file, e.g. +jsonl_fpath=results/rollouts.jsonl."),
        (["+jsonl_fpath=x.jsonl", "+port=70000"], "+port=70000 is not valid: pass a port number from 1 to 65535."),
        (["+jsonl_fpath=x.jsonl", "+max_rows=5"], "+max_rows caps a written page; it needs +output_html=<page.html>"),
    ],
    ids=["typo", "no-file", "bad-port", "max-rows-alone"],
)
def test_settings_are_checked_before_anything_is_read(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_failing(args, capsys)
    assert code == 2 and message in err


def test_a_port_in_use_is_named_with_the_way_out(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_failing([f"+jsonl_fpath={sample}", f"+port={port}"], capsys)
    assert code == 1
    assert f"cannot serve on 127.0.0.1:{port}: address already in use. Pass another +port=N" in err


# ---------------------------------------------------------------- the command


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_command_prints_its_url_and_stops_promptly(sample: Path, tmp_path: Path, stop: signal.Signals) -> None:
    viewer = CommandProcess([sys.executable, "-m", "nemo_gym.cli.viewer", f"+jsonl_fpath={sample}"], cwd=tmp_path)
    try:
        assert viewer.wait_for("ng_viewer ready at http://127.0.0.1:", 60), viewer.output
        url = re.search(r"ng_viewer ready at (http://127\.0\.0\.1:\d+)$", viewer.output, re.MULTILINE)
        assert url is not None, viewer.output
        assert "26 rollouts (1 failed)" in viewer.output
        with httpx.Client(base_url=url[1], timeout=10, trust_env=False) as client:
            assert client.get("/").status_code == 200
            assert client.get("/api/meta").json()["total"] == 26
        started = time.monotonic()
        viewer.send(stop)
        assert viewer.wait(10) == 0, viewer.output
        assert time.monotonic() - started < 5
        assert "ng_viewer stopped." in viewer.output and "Traceback" not in viewer.output
    finally:
        viewer.close()
