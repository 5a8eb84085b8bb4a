"""write_report: the Markdown figures, a CSV that reads back to the summaries, one self-contained HTML page with
an SVG chart, a PNG, and labels from user config escaped everywhere."""

from __future__ import annotations

import csv
import html
import re
import struct
import typing
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.image
import pytest

from nemo_gym.compare.report import ReportFiles, cost_scale, write_report
from nemo_gym.compare.statistics import Comparison, ModelSummary, Recommendation

BEST = "openai/gpt-4o"
FREE = "meta-llama/llama-3.1-8b-instruct:free"
ESTIMATED = "<script>alert('x')</script>"
NO_COST = "local|model_a"
NO_REWARD = "broken/model"
CHARTED = [BEST, FREE, ESTIMATED]


def summary(label: str, **fields: Any) -> ModelSummary:
    base: dict[str, Any] = dict(
        label=label,
        model=label,
        rollouts=100,
        succeeded=100,
        failed=0,
        mean_reward=None,
        ci_low=None,
        ci_high=None,
        pass_rate=None,
        total_cost_usd=None,
        cost_per_rollout_usd=None,
        cost_per_reward_point_usd=None,
        cost_estimated=False,
        input_tokens=0,
        output_tokens=0,
        input_tokens_per_rollout=None,
        output_tokens_per_rollout=None,
        p50_latency_s=None,
        p95_latency_s=None,
    )
    return ModelSummary(**{**base, **fields})


def five_models() -> list[ModelSummary]:
    return [
        summary(
            BEST,
            succeeded=98,
            failed=2,
            mean_reward=0.85,
            ci_low=0.8,
            ci_high=0.9,
            pass_rate=0.82,
            total_cost_usd=1.23,
            cost_per_rollout_usd=0.0123,
            cost_per_reward_point_usd=1.23 / 83.3,
            input_tokens=123_400,
            output_tokens=45_600,
            input_tokens_per_rollout=1234.0,
            output_tokens_per_rollout=456.0,
            p50_latency_s=1.5,
            p95_latency_s=4.25,
            rollouts_path="results/gpt-4o.jsonl",
        ),
        summary(
            FREE,
            mean_reward=0.83,
            ci_low=0.78,
            ci_high=0.88,
            pass_rate=0.8,
            total_cost_usd=0.0,
            cost_per_rollout_usd=0.0,
            cost_per_reward_point_usd=0.0,
            input_tokens_per_rollout=1200.0,
            output_tokens_per_rollout=500.0,
            p50_latency_s=2.0,
            p95_latency_s=6.0,
        ),
        summary(
            ESTIMATED,
            model="mistralai/mistral-small",
            mean_reward=0.61,
            ci_low=0.55,
            ci_high=0.67,
            pass_rate=0.5,
            total_cost_usd=0.041,
            cost_per_rollout_usd=0.00041,
            cost_per_reward_point_usd=0.041 / 61,
            cost_estimated=True,
            p50_latency_s=0.8,
            p95_latency_s=1.1,
        ),
        summary(NO_COST, mean_reward=0.7, ci_low=0.6, ci_high=0.8, pass_rate=0.6),
        summary(NO_REWARD, succeeded=0, failed=100, total_cost_usd=0.002, cost_per_rollout_usd=0.00002),
    ]


def make_comparison(models: list[ModelSummary], recommendation: Recommendation | None) -> Comparison:
    return Comparison(
        title="simple_weather: model comparison",
        dataset="resources_servers/simple_weather/data/x.jsonl",
        rows=50,
        num_repeats=2,
        created_at=datetime(2025, 3, 4, 12, 30, tzinfo=UTC),
        models=models,
        recommendation=recommendation,
    )


RECOMMENDATION = Recommendation(
    best=BEST,
    cheapest_within_interval=FREE,
    text=f"{FREE} (mean reward 0.830) is within the 95% interval [0.800, 0.900] of the "
    f"best, {BEST} (0.850), at $0.000000 instead of $0.012300 per rollout.",
)


@pytest.fixture
def comparison() -> Comparison:
    return make_comparison(five_models(), RECOMMENDATION)


@pytest.fixture
def report(comparison: Comparison, tmp_path: Path) -> ReportFiles:
    return write_report(comparison, tmp_path)


def md_table(markdown: str) -> dict[str, list[str]]:
    """Table rows by their first cell, split on the pipes a label's `\\|` does not escape."""
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Model ")]
    cells = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in rows]
    return {row[0]: row[1:] for row in cells}


class TableRows(HTMLParser):
    """The attributes and cell texts of each `<tr>` in a `<tbody>`."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str | None], list[str]]] = []
        self.in_body = False
        self.cell: list[str] | None = None
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append((dict(attrs), []))
        elif tag == "td" and self.in_body:
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_body = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1][1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def parse_rows(page: str) -> TableRows:
    parser = TableRows()
    parser.feed(page)
    return parser


# ---------------------------------------------------------------- files


def test_writes_four_files_named_after_the_stem(comparison: Comparison, tmp_path: Path) -> None:
    files = write_report(comparison, tmp_path / "nested" / "out", stem="weather-2025")
    assert [files.markdown.name, files.csv.name, files.html.name, files.png.name] == [
        "weather-2025.md",
        "weather-2025.csv",
        "weather-2025.html",
        "weather-2025.png",
    ]
    assert all(
        path.is_file() and path.stat().st_size > 0 for path in (files.markdown, files.csv, files.html, files.png)
    )
    assert "![reward vs cost](weather-2025.png)" in files.markdown.read_text()


@pytest.mark.parametrize("stem", ["", "../up", "a/b", ".."])
def test_rejects_a_stem_that_is_not_a_plain_name(comparison: Comparison, tmp_path: Path, stem: str) -> None:
    with pytest.raises(ValueError, match="stem"):
        write_report(comparison, tmp_path, stem=stem)


def test_leaves_matplotlib_global_settings_alone(comparison: Comparison, tmp_path: Path) -> None:
    backend, fonttype = matplotlib.get_backend(), matplotlib.rcParams["svg.fonttype"]
    write_report(comparison, tmp_path)
    assert (matplotlib.get_backend(), matplotlib.rcParams["svg.fonttype"]) == (backend, fonttype)


# ---------------------------------------------------------------- Markdown


def test_markdown_heading_dataset_and_bold_recommendation(report: ReportFiles) -> None:
    lines = report.markdown.read_text().splitlines()
    assert lines[0] == "# simple_weather: model comparison"
    assert lines[2] == (
        "Dataset: resources_servers/simple_weather/data/x.jsonl · 50 rows × 2 repeats · 2025-03-04 12:30 UTC"
    )
    assert lines[4] == (
        f"**{FREE} (mean reward 0.830) is within the 95% interval [0.800, 0.900] of the best, {BEST} "
        "(0.850), at \\$0.000000 instead of \\$0.012300 per rollout.**"
    )


def test_markdown_table_figures(report: ReportFiles) -> None:
    table = md_table(report.markdown.read_text())
    assert len(table) == 5 and all(len(cells) == 11 for cells in table.values())
    assert table[BEST] == [
        "100",
        "2",
        "0.850 [0.800, 0.900]",
        "82.0%",
        "1.23",
        "0.0123",
        "0.0148",
        "1,234",
        "456",
        "1.50",
        "4.25",
    ]
    assert table[f"**{FREE}** (recommended)"] == [
        "100",
        "0",
        "0.830 [0.780, 0.880]",
        "80.0%",
        "0.00",
        "0.00",
        "0.00",
        "1,200",
        "500",
        "2.00",
        "6.00",
    ]
    assert table["&lt;script&gt;alert('x')&lt;/script&gt;"] == [
        "100",
        "0",
        "0.610 [0.550, 0.670]",
        "50.0%",
        "0.0410\\*",
        "0.000410\\*",
        "0.000672\\*",
        "–",
        "–",
        "0.80",
        "1.10",
    ]
    assert table["local\\|model_a"][2:6] == ["0.700 [0.600, 0.800]", "60.0%", "–", "–"]
    assert table[NO_REWARD] == ["100", "100", "–", "–", "0.00200", "0.0000200", "–", "–", "–", "–", "–"]


def test_markdown_mean_without_interval_and_unknowns_shown_one_way(comparison: Comparison, tmp_path: Path) -> None:
    single = summary("one-rollout", rollouts=1, succeeded=1, mean_reward=1.0, pass_rate=1.0)
    markdown = write_report(make_comparison([*comparison.models, single], None), tmp_path).markdown.read_text()
    assert md_table(markdown)["one-rollout"][2:4] == ["1.000", "100.0%"]
    assert "n/a" not in markdown
    assert "**No recommendation: no model has a scored rollout.**" in markdown


def test_markdown_footnotes_chart_and_left_off_note(report: ReportFiles) -> None:
    markdown = report.markdown.read_text()
    assert "\\* estimated from catalog prices: the endpoint reported no cost." in markdown
    method = next(line for line in markdown.splitlines() if line.startswith("Method:"))
    for phrase in (
        "mean reward is over scored rollouts",
        "failed rollouts are counted apart",
        "95% Student-t interval",
        "cheapest model per rollout",
        "within the best model's interval",
        "&lt;= 10% failed rollouts",
    ):
        assert phrase in method
    assert "![reward vs cost](comparison.png)" in markdown
    assert "Not on the chart: local\\|model_a (cost unknown); broken/model (no scored rollouts)." in markdown


def test_markdown_has_no_estimated_footnote_without_estimates(comparison: Comparison, tmp_path: Path) -> None:
    models = [m for m in comparison.models if not m.cost_estimated]
    markdown = write_report(make_comparison(models, RECOMMENDATION), tmp_path).markdown.read_text()
    assert "estimated from catalog prices" not in markdown and "\\*" not in markdown


def test_markdown_escapes_labels(report: ReportFiles) -> None:
    markdown = report.markdown.read_text()
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown


# ---------------------------------------------------------------- CSV


def _nullable(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def test_csv_reads_back_to_the_summaries(report: ReportFiles, comparison: Comparison) -> None:
    with report.csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(ModelSummary.model_fields)
    nullable = {name for name, field in ModelSummary.model_fields.items() if _nullable(field.annotation)}
    read = [
        ModelSummary.model_validate({k: (None if v == "" and k in nullable else v) for k, v in row.items()})
        for row in rows
    ]
    assert read == comparison.models  # floats at full precision: equal, not approximately
    assert rows[0]["cost_per_reward_point_usd"] == repr(1.23 / 83.3)
    assert rows[2]["label"] == ESTIMATED and rows[2]["cost_estimated"] == "true"
    assert rows[3]["total_cost_usd"] == "" and rows[4]["mean_reward"] == ""


# ---------------------------------------------------------------- HTML and SVG


def test_html_is_one_self_contained_page(report: ReportFiles) -> None:
    page = report.html.read_text()
    references = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.IGNORECASE)
    references += re.findall(r"""url\(\s*["']?([^"')\s]*)""", page, flags=re.IGNORECASE)
    assert references, "the SVG's markers and clip paths are referenced by #id"
    assert all(ref.startswith("#") for ref in references), [r for r in references if not r.startswith("#")]
    for tag in ("<script", "<link", "<img", "<iframe", "@import", "<?xml", "<!DOCTYPE svg"):
        assert tag.lower() not in page.lower()
    assert page.count("<svg") == 1 and "<style>" in page


def test_html_escapes_labels_in_text_and_attributes(report: ReportFiles) -> None:
    page = report.html.read_text()
    assert "<script>" not in page
    assert 'data-model="&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"' in page
    assert "&lt;script&gt;alert('x')&lt;/script&gt;</text>" in page.split("<svg", 1)[1]  # the chart's label


def test_html_table_has_one_row_per_model_and_highlights_the_recommendation(report: ReportFiles) -> None:
    page = report.html.read_text()
    assert '<table id="comparison-table">' in page
    rows = parse_rows(page).rows
    assert [attrs["data-model"] for attrs, _cells in rows] == [m for m in (BEST, FREE, ESTIMATED, NO_COST, NO_REWARD)]
    assert [attrs.get("class") for attrs, _cells in rows] == [None, "recommended", None, None, None]
    cells = {attrs["data-model"]: texts for attrs, texts in rows}
    assert cells[BEST][1:] == [
        "100",
        "2",
        "0.850 [0.800, 0.900]",
        "82.0%",
        "1.23",
        "0.0123",
        "0.0148",
        "1,234",
        "456",
        "1.50",
        "4.25",
    ]
    assert cells[ESTIMATED][0] == ESTIMATED + "mistralai/mistral-small"  # the model id under a custom label
    assert cells[ESTIMATED][5:8] == ["0.0410*", "0.000410*", "0.000672*"]
    assert "* estimated from catalog prices: the endpoint reported no cost." in page
    assert "tbody tr.recommended { background-color:" in page


def test_svg_chart_has_one_findable_point_per_charted_model(report: ReportFiles) -> None:
    svg = report.html.read_text().split("<svg", 1)[1].split("</svg>", 1)[0]
    assert re.findall(r'id="(model-point-\d+)"', svg) == [f"model-point-{i}" for i in range(len(CHARTED))]
    assert re.findall(r'id="(model-label-\d+)"', svg) == [f"model-label-{i}" for i in range(len(CHARTED))]
    labels = re.findall(r'<g id="model-label-\d+">\s*<text[^>]*>([^<]*)</text>', svg)
    assert labels == [html.escape(label, quote=False) for label in CHARTED]  # label i names point i's model
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)  # svg.fonttype none: labels are real text
    for label in (BEST, FREE, "&lt;script&gt;alert('x')&lt;/script&gt;"):
        assert label in texts
    assert any("linear below 0.0001 so free models show at 0" in text for text in texts)
    assert "recommended" in texts


def test_left_off_models_are_named_below_the_chart(report: ReportFiles) -> None:
    page = report.html.read_text()
    note = re.search(r'<p class="note" id="left-off">([^<]*)</p>', page)
    assert note and note.group(1) == (
        "Not on the chart: local|model_a (cost unknown); broken/model (no scored rollouts)."
    )
    assert page.index("<svg") < page.index('id="left-off"') < page.index("comparison-table")


# ---------------------------------------------------------------- PNG and chart


def test_png_is_an_800_by_500_image_with_content(report: ReportFiles) -> None:
    data = report.png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (800, 500)
    pixels = matplotlib.image.imread(report.png)
    assert pixels.shape[:2] == (500, 800)
    assert pixels[..., :3].std() > 0.05


@pytest.mark.parametrize(
    ("costs", "scale"),
    [
        ([0.001, 0.002], "linear"),
        ([0.001, 0.02], "linear"),  # exactly 20x
        ([0.0001, 0.01], "log"),
        ([0.0, 0.0001, 0.01], "symlog"),
        ([0.0, 0.0001, 0.0015], "linear"),
        ([0.0, 0.0], "linear"),
    ],
)
def test_cost_axis_goes_logarithmic_past_twenty_fold(costs: list[float], scale: str) -> None:
    assert cost_scale(costs) == scale


def test_linear_and_log_charts_render_with_their_axis_label(comparison: Comparison, tmp_path: Path) -> None:
    def with_costs(*costs: float) -> list[ModelSummary]:
        return [
            m.model_copy(update={"cost_per_rollout_usd": c}) for m, c in zip(comparison.models[:3], costs, strict=True)
        ]

    near = with_costs(0.003, 0.001, 0.002)
    svg = write_report(make_comparison(near, RECOMMENDATION), tmp_path / "linear").html.read_text()
    assert "cost per rollout (USD)</text>" in svg and svg.count('id="model-point-') == 3
    spread = with_costs(0.05, 0.001, 0.0002)
    svg = write_report(make_comparison(spread, RECOMMENDATION), tmp_path / "log").html.read_text()
    assert "cost per rollout (USD, log scale)</text>" in svg and svg.count('id="model-point-') == 3


def test_nothing_to_chart_and_no_recommendation_still_renders(comparison: Comparison, tmp_path: Path) -> None:
    files = write_report(make_comparison(comparison.models[3:], None), tmp_path)
    page = files.html.read_text()
    assert "model-point-" not in page and "No model has both a known cost and a mean reward" in page
    assert 'class="recommended"' not in page and "No recommendation" in page
    assert "Not on the chart: local|model_a (cost unknown); broken/model (no scored rollouts)." in page
    assert matplotlib.image.imread(files.png).shape[:2] == (500, 800)
