"""ng_viewer as a reader sees it: headless Chromium opens the served page, filters, clicks into rollouts and reads
the conversation; the written page must filter exactly like the server. No request may leave 127.0.0.1, and the
markup a model wrote must stay text."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from nemo_gym.compare.report import usd
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.browser import headless_chromium, require_browser, serve_directory
from nemo_gym.testing.viewer_sample import FAILED_ERROR, MARKUP, MARKUP_MODEL, MODELS, write_sample
from nemo_gym.viewer import Query, RolloutIndex, build_app, write_html

pytestmark = pytest.mark.slow

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def chromium(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Skipped on a machine without the browser; under CI a missing browser is a failure, not a silent skip."""
    require_browser("viewer browser test")
    # The sample first: its collection runs asyncio.run (in the main thread, for its signal handlers), which cannot
    # start once Playwright's sync API keeps an event loop running here.
    request.getfixturevalue("sample")
    with headless_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("viewer-browser"))


@pytest.fixture(scope="module")
def records(sample: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sample.read_text().splitlines()]


class Browsing:
    """One page in a fresh context that may only reach 127.0.0.1, recording every request and every page error."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1500, "height": 1000}, device_scale_factor=1)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._only_loopback)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        # A blocked script or style (a wrong Content-Security-Policy hash) shows up here as a console error.
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)

    def _only_loopback(self, route: Any) -> None:
        url = route.request.url
        self.requests.append(url)
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    def open(self, url: str) -> Any:
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.ok
        self.page.locator("body[data-ready=true]").wait_for(state="attached")
        return self.page

    def check_clean(self) -> None:
        assert self.requests and all(urlsplit(u).hostname == "127.0.0.1" for u in self.requests), self.requests
        assert self.errors == []


@contextmanager
def browsing(browser: Any) -> Iterator[Browsing]:
    session = Browsing(browser)
    try:
        yield session
    finally:
        session.context.close()


def expect_count(page: Any, text: str) -> None:
    """Wait until the count reads exactly `text` (an equal-looking earlier count must not satisfy the wait)."""
    with contextlib.suppress(Exception):  # a timeout: the assertion below shows the difference
        page.wait_for_function(
            "text => document.querySelector('#count')?.innerText === text", arg=text, timeout=TIMEOUT_MS
        )
    assert page.locator("#count").inner_text() == text


def open_rollout(page: Any, index: int) -> Any:
    page.locator(f'#rollouts tbody tr[data-index="{index}"]').click()
    detail = page.locator(f'#detail[data-index="{index}"]')
    detail.locator("#conversation").wait_for()
    return detail


def shown_indexes(page: Any) -> list[int]:
    return [int(i) for i in page.locator("#rollouts tbody tr").evaluate_all("rows => rows.map(r => r.dataset.index)")]


def expect_rows(page: Any, indexes: list[int]) -> None:
    """The table shows exactly these rollouts, in this order (waiting for the page to catch up)."""
    with contextlib.suppress(Exception):  # a timeout: the assertion below shows the difference
        page.wait_for_function(
            "ids => JSON.stringify([...document.querySelectorAll('#rollouts tbody tr')]"
            ".map(r => Number(r.dataset.index))) === JSON.stringify(ids)",
            arg=indexes,
            timeout=5_000,
        )
    assert shown_indexes(page) == indexes


def tool_rollout(records: list[dict[str, Any]]) -> int:
    """A perfect rollout that called a tool, got its result and answered."""
    for index, record in enumerate(records):
        kinds = [item["type"] for item in (record.get("response") or {}).get("output") or []]
        if record["reward"] == 1.0 and kinds == ["function_call", "function_call_output", "message"]:
            return index
    raise AssertionError("the sample has no rollout with a tool call")


def test_served_viewer_filters_and_shows_a_rollout_with_its_tool_calls(
    chromium: Any, sample: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    total = len(records)
    index = RolloutIndex.load(sample)
    with serve_in_thread(build_app(index)) as url, browsing(chromium) as session:
        page = session.open(url + "/")
        expect_count(page, f"{total} of {total} rollouts")
        assert page.locator("#rollouts tbody tr").count() == total
        assert page.locator("#warnings").is_hidden()

        # Filters, each checked against the server's own answer.
        llama = index.select(Query(model=MODELS[1], limit=1000))["matched"]
        page.select_option("#model", MODELS[1])
        expect_count(page, f"{llama} of {total} rollouts")
        perfect = index.select(Query(model=MODELS[1], reward_min=1.0, limit=1000))
        page.fill("#reward-min", "1")
        expect_count(page, f"{perfect['matched']} of {total} rollouts")
        assert 0 < perfect["matched"] < llama
        expect_rows(page, [row["index"] for row in perfect["rows"]])
        assert set(page.locator("#rollouts tbody td.reward").all_inner_texts()) == {"1"}
        page.click("#clear")
        expect_count(page, f"{total} of {total} rollouts")
        page.select_option("#error", "failed")
        expect_count(page, f"1 of {total} rollouts")
        page.select_option("#error", "all")
        expect_count(page, f"{total} of {total} rollouts")  # else the next wait could see the old "1 of N"
        page.fill("#search", "oslo")
        expect_count(page, f"1 of {total} rollouts")
        page.click("#clear")
        expect_count(page, f"{total} of {total} rollouts")

        # A rollout that called get_weather: the whole conversation, in order, and its figures.
        chosen = tool_rollout(records)
        record = records[chosen]
        detail = open_rollout(page, chosen)
        turns = detail.locator("#conversation li.turn")
        assert turns.evaluate_all("items => items.map(i => i.dataset.kind + ':' + (i.dataset.role || ''))") == [
            "message:developer",
            "message:user",
            "function_call:",
            "function_call_output:",
            "message:assistant",
        ]
        messages = record["input"]["responses_create_params"]["input"]
        question = next(m["content"] for m in messages if m["role"] == "user")
        call, result, answer = record["response"]["output"]
        assert detail.locator('[data-role="user"] .turn-body').inner_text() == question
        assert detail.locator(".kind-function_call .fn-name").inner_text() == "get_weather"
        arguments = json.loads(call["arguments"])
        assert json.loads(detail.locator(".kind-function_call .fn-args").inner_text()) == arguments
        assert json.loads(detail.locator(".kind-function_call_output .fn-output").inner_text()) == json.loads(
            result["output"]
        )
        assert json.loads(result["output"])["weather"] in detail.locator(".kind-function_call_output").inner_text()
        assert detail.locator('[data-role="assistant"] .turn-body').inner_text() == answer["content"][0]["text"]
        assert detail.locator("#detail-reward").inner_text() == "reward 1"
        assert detail.locator('#verifier [data-key="reasons"]').inner_text() == record["reasons"][0]
        assert detail.locator('#verifier [data-key="expected_cities"]').inner_text() == arguments["city"]
        assert detail.locator('#verifier [data-key="row_hash"]').count() == 0  # the record's own keys stay out
        usage = record["usage"]
        assert detail.locator('#facts [data-key="tokens"]').inner_text() == (
            f"input {usage['input_tokens']} (cached 0) · output {usage['output_tokens']} (reasoning 0) · "
            f"total {usage['total_tokens']} · {usage['calls']} model calls"
        )
        assert detail.locator('#facts [data-key="cost"]').inner_text() == f"${usd(record['cost_usd'])}"
        assert detail.locator('#facts [data-key="models"]').inner_text() == record["models"][0]
        screenshot = tmp_path / "viewer.png"
        page.screenshot(path=str(screenshot))

        # Keyboard: the next row opens with the down arrow.
        page.locator(f'#rollouts tbody tr[data-index="{chosen}"]').focus()
        page.keyboard.press("ArrowDown")
        page.locator(f'#detail[data-index="{chosen + 1}"]').wait_for()

        # The failed rollout: its whole error, no reward.
        failed = total - 2
        detail = open_rollout(page, failed)
        assert detail.locator("#detail-reward").inner_text() == "failed"
        assert detail.locator('#facts [data-key="error"]').inner_text() == FAILED_ERROR
        assert detail.locator('[data-role="user"] .turn-body').inner_text() == "Weather in Oslo?"

        # Markup a model wrote is shown as text and never runs.
        check_markup_stays_text(page, total - 1)
        page.screenshot(path=str(tmp_path / "viewer-markup.png"))
        session.check_clean()
    assert screenshot.stat().st_size > 20_000


def check_markup_stays_text(page: Any, index: int) -> None:
    detail = open_rollout(page, index)
    for selector in (
        '[data-role="user"] .turn-body',
        ".kind-reasoning .turn-body",
        ".kind-function_call .fn-args",
        ".kind-function_call_output .fn-output",
        '[data-role="assistant"] .turn-body',
        '#verifier [data-key="reasons"]',
    ):
        assert "<script>window.__viewerInjected = true</script>" in detail.locator(selector).inner_text(), selector
    assert MARKUP in detail.locator('[data-role="assistant"] .turn-body').inner_text()
    assert page.locator("#detail script, #detail img, #detail b, #model b").count() == 0
    assert page.evaluate("window.__viewerInjected") is None
    assert MARKUP_MODEL in detail.locator('#facts [data-key="models"]').inner_text()
    assert f"{MARKUP_MODEL} (1)" in page.locator("#model").inner_text()
    assert "(estimated from catalog prices)" in detail.locator('#facts [data-key="cost"]').inner_text()
    assert (
        detail.locator('#facts [data-key="tokens"]')
        .inner_text()
        .startswith("input 210 (cached 64) · output 48 (reasoning 12)")
    )


@pytest.mark.parametrize(
    "filters",
    [
        {"search": "snow"},
        {"search": "TOKYO", "sort": "-reward"},
        {"reward_min": 0.3, "reward_max": 0.9},
        {"model": MODELS[0], "error": "succeeded", "sort": "cost_usd"},
        {"error": "failed"},
        {"sort": "-latency_s"},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
def test_written_page_filters_and_sorts_like_the_server(
    chromium: Any, sample: Path, tmp_path: Path, filters: dict[str, Any]
) -> None:
    index = RolloutIndex.load(sample)
    html_path = write_html(index, tmp_path / "rollouts.html")
    expected = index.select(Query(**filters, limit=1000))
    with serve_directory(tmp_path) as base, browsing(chromium) as session:
        page = session.open(f"{base}/{html_path.name}")
        total = expected["total"]
        expect_count(page, f"{total} of {total} rollouts")
        for key, value in filters.items():
            if key == "sort":
                header = page.locator(f'th[data-sort="{value.removeprefix("-")}"]')
                header.click()
                if value.startswith("-"):
                    header.click()
            elif key in ("model", "error"):
                page.select_option(f"#{key}", value)
            else:
                page.fill(f"#{key.replace('_', '-')}", str(value))
        expect_count(page, f"{expected['matched']} of {total} rollouts")
        expect_rows(page, [row["index"] for row in expected["rows"]])
        session.check_clean()
        assert session.requests == [f"{base}/{html_path.name}"], "a written page loads nothing else"


def test_written_page_shows_markup_as_text(chromium: Any, sample: Path, tmp_path: Path) -> None:
    index = RolloutIndex.load(sample)
    html_path = write_html(index, tmp_path / "rollouts.html")
    with serve_directory(tmp_path) as base, browsing(chromium) as session:
        page = session.open(f"{base}/{html_path.name}")
        check_markup_stays_text(page, len(index.entries) - 1)
        assert MARKUP in page.locator("#rollouts tbody tr").last.locator("td.question").get_attribute("title")
        session.check_clean()


def test_a_rollout_recorded_twice_is_named_as_such_in_the_warnings_header(
    chromium: Any, sample: Path, tmp_path: Path
) -> None:
    lines = sample.read_text().splitlines()
    path = tmp_path / "twice.jsonl"
    path.write_text("\n".join([lines[0], lines[1], lines[0], "{not json"]) + "\n")
    with serve_in_thread(build_app(RolloutIndex.load(path))) as url, browsing(chromium) as session:
        page = session.open(url + "/")
        summary = page.locator("#warnings-summary").inner_text()
        assert summary == "1 rollout recorded more than once; 1 line skipped: not rollout records"
        session.check_clean()


def test_skipped_lines_are_listed_on_the_page_with_their_numbers(chromium: Any, sample: Path, tmp_path: Path) -> None:
    lines = sample.read_text().splitlines()
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([lines[0], "{not json", lines[1], '"a string"']) + "\n")
    with serve_in_thread(build_app(RolloutIndex.load(path))) as url, browsing(chromium) as session:
        page = session.open(url + "/")
        expect_count(page, "2 of 2 rollouts")
        warnings = page.locator("#warnings")
        assert warnings.is_visible()
        assert page.locator("#warnings-summary").inner_text() == "2 lines skipped: not rollout records"
        items = page.locator("#warnings-list li")
        assert items.evaluate_all("items => items.map(i => i.dataset.line)") == ["2", "4"]
        assert items.nth(0).inner_text().startswith("line 2: not valid JSON")
        assert items.nth(1).inner_text() == "line 4: a rollout record must be a JSON object, got str; skipped."
        session.check_clean()
