"""The HTML report as a reader sees it: headless Chromium loads it from a loopback server, and the chart, the
table and the highlight must really render, with no request leaving 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import matplotlib.image
import numpy as np
import pytest

from nemo_gym.compare.report import RECOMMENDED_COLOR, write_report
from nemo_gym.compare.statistics import Comparison, recommend, summarize
from nemo_gym.testing.browser import headless_chromium, require_browser, serve_directory

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Skipped on a machine without the browser; under CI a missing browser is a failure, not a silent skip."""
    require_browser("report browser test")
    with headless_chromium() as browser:
        yield browser


def _records(rewards: list[float], cost: float | None) -> list[dict[str, Any]]:
    return [
        {
            "reward": reward,
            "error": None,
            "cost_usd": cost,
            "latency_s": 1.0 + index % 3,
            "usage": {"input_tokens": 900, "output_tokens": 150},
        }
        for index, reward in enumerate(rewards)
    ]


def build_comparison() -> Comparison:
    """Four models through the real summarize/recommend: the best, a cheaper one within its interval (the
    recommendation), a free weak one, and one without any cost (left off the chart) whose label is markup."""
    good = [1.0] * 17 + [0.0] * 3
    models = [
        summarize("openai/gpt-4o", "openai/gpt-4o", _records(good, 0.01)),
        summarize(
            "google/gemini-2.0-flash-001", "google/gemini-2.0-flash-001", _records([1.0] * 16 + [0.0] * 4, 0.0004)
        ),
        summarize(
            "meta-llama/llama-3.1-8b-instruct:free",
            "meta-llama/llama-3.1-8b-instruct:free",
            _records([1.0, 0.0] * 10, 0.0),
        ),
        summarize("<b>local</b>", "local-model", _records([1.0, 1.0, 0.0, 1.0] * 5, None)),
    ]
    return Comparison(
        title="simple_weather: model comparison",
        dataset="data/example.jsonl",
        rows=5,
        num_repeats=4,
        created_at=datetime(2025, 3, 4, 12, 30, tzinfo=UTC),
        models=models,
        recommendation=recommend(models),
    )


def test_report_renders_in_headless_chromium(chromium: Any, tmp_path: Path) -> None:
    comparison = build_comparison()
    assert comparison.recommendation is not None
    recommended = comparison.recommendation.cheapest_within_interval
    assert recommended == "google/gemini-2.0-flash-001" != comparison.recommendation.best
    charted = [m for m in comparison.models if m.mean_reward is not None and m.cost_per_rollout_usd is not None]
    assert len(charted) == 3
    files = write_report(comparison, tmp_path / "report")

    requests: list[str] = []
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    try:
        page = context.new_page()

        def only_loopback(route: Any) -> None:
            url = route.request.url
            requests.append(url)
            if urlsplit(url).hostname == "127.0.0.1":
                route.continue_()
            else:
                route.abort()

        page.route("**/*", only_loopback)
        with serve_directory(files.html.parent) as base:
            response = page.goto(f"{base}/{files.html.name}", wait_until="load")
            assert response is not None and response.ok
            svg = page.locator("#chart svg")
            svg.wait_for(state="visible")
            box = svg.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 150

            points = page.locator("#chart svg [id^=model-point-]")
            assert points.count() == len(charted)
            for index in range(points.count()):
                point = points.nth(index).bounding_box()
                assert point is not None and point["width"] > 0 and point["height"] > 0
                assert box["x"] <= point["x"] and point["x"] + point["width"] <= box["x"] + box["width"]
            for model in charted:  # labels are real text in the SVG, not glyph paths
                assert page.locator("#chart svg text", has_text=model.label).count() == 1

            rows = page.locator("#comparison-table tbody tr")
            assert rows.count() == len(comparison.models)
            assert [rows.nth(i).get_attribute("data-model") for i in range(rows.count())] == [
                m.label for m in comparison.models
            ]
            backgrounds = rows.evaluate_all("rows => rows.map(r => getComputedStyle(r).backgroundColor)")
            highlighted = [m.label == recommended for m in comparison.models]
            chosen = {bg for bg, hit in zip(backgrounds, highlighted, strict=True) if hit}
            others = {bg for bg, hit in zip(backgrounds, highlighted, strict=True) if not hit}
            assert len(chosen) == 1 and not chosen & others, backgrounds
            assert page.locator("#comparison-table tr.recommended").get_attribute("data-model") == recommended

            markup_row = page.locator('#comparison-table tr[data-model="<b>local</b>"]')
            assert markup_row.locator("td").first.inner_text().startswith("<b>local</b>")
            assert page.locator("#comparison-table b").count() == 0  # the label stayed text
            assert "<b>local</b> (cost unknown)" in page.locator("#left-off").inner_text()

            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
            scroll_y = page.evaluate("window.scrollY")
    finally:
        context.close()

    assert requests and all(urlsplit(url).hostname == "127.0.0.1" for url in requests), requests
    pixels = matplotlib.image.imread(screenshot)[..., :3]
    top, left = int(box["y"] + scroll_y), int(box["x"])
    chart = pixels[top : top + int(box["height"]), left : left + int(box["width"])]
    assert chart.shape[0] > 150 and chart.shape[1] > 300
    assert chart.std() > 0.05, "the chart region of the screenshot is blank"
    dark = (chart.mean(axis=2) < 0.5).mean()
    assert 0.002 < dark < 0.5, f"{dark:.3%} of the chart is dark: no text and axes, or no background"
    star = np.array([int(RECOMMENDED_COLOR[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    assert (np.abs(chart - star).max(axis=2) < 0.08).sum() > 30, "the recommended model's marker is not drawn"
