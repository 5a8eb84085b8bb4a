"""Render a model comparison as Markdown, CSV, one self-contained HTML page and a PNG chart.

Every file is built from the `Comparison` alone, so a report can be rebuilt from the rollout files at any time.
The HTML page embeds its chart as SVG and its styles inline: it can be mailed or archived without breaking.
Labels come from user config, so every piece of text is escaped for the format it lands in.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, TextIO, cast

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.scale import SymmetricalLogTransform
from matplotlib.text import Annotation
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import Bbox

from nemo_gym.compare.statistics import CONFIDENCE, MAX_FAILURE_RATE_TO_RECOMMEND, Comparison, ModelSummary
from nemo_gym.protocol.types import JSONObject

UNKNOWN = "–"
LOG_SCALE_RATIO = 20.0
"""Past this ratio of largest to smallest positive cost per rollout, the chart's cost axis is logarithmic."""

FIGSIZE_IN = (8.0, 5.0)
PNG_DPI = 100  # 800 x 500 pixels
POINT_COLOR = "#0072b2"
RECOMMENDED_COLOR = "#d55e00"  # Okabe-Ito blue / vermillion, told apart by marker shape too
ESTIMATED_NOTE = "estimated from catalog prices: the endpoint reported no cost"
RC: JSONObject = {"svg.fonttype": "none", "svg.hashsalt": "nemo-gym-report", "font.size": 10.0}
"""Text stays text in the SVG (searchable, crisp); a fixed salt keeps the SVG's internal ids stable."""


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    csv: Path
    html: Path
    png: Path


@dataclass(frozen=True)
class Chart:
    """One figure rendered twice: SVG text for the HTML page, PNG bytes for the Markdown."""

    svg: str
    png: bytes
    charted: list[int]  # positions in comparison.models, as in the points' gids `model-point-<position>`
    left_off: list[tuple[str, str]]  # (label, why)


def write_report(comparison: Comparison, output_dir: Path, *, stem: str = "comparison") -> ReportFiles:
    """Write `<stem>.md`, `.csv`, `.html` and `.png` into output_dir (created if missing)."""
    if not stem or stem in {".", ".."} or any(sep in stem for sep in ("/", "\\", "\0")):
        raise ValueError(f"stem must be a plain file name without a directory, got {stem!r}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        markdown=output_dir / f"{stem}.md",
        csv=output_dir / f"{stem}.csv",
        html=output_dir / f"{stem}.html",
        png=output_dir / f"{stem}.png",
    )
    chart = render_chart(comparison)
    files.png.write_bytes(chart.png)
    files.markdown.write_text(render_markdown(comparison, chart, image=f"{stem}.png"), encoding="utf-8")
    files.html.write_text(render_html(comparison, chart), encoding="utf-8")
    with files.csv.open("w", encoding="utf-8", newline="") as handle:
        write_csv(comparison.models, handle)
    return files


# ---------------------------------------------------------------- figures as text


def usd(value: float | None) -> str:
    """Three significant digits without scientific notation: per-rollout costs are often far below a cent."""
    if value is None:
        return UNKNOWN
    if value == 0:
        return "0.00"
    decimals = min(10, max(2, 2 - math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def reward_with_interval(model: ModelSummary) -> str:
    if model.mean_reward is None:
        return UNKNOWN
    if model.ci_low is None or model.ci_high is None:
        return f"{model.mean_reward:.3f}"
    return f"{model.mean_reward:.3f} [{model.ci_low:.3f}, {model.ci_high:.3f}]"


def _percent(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value * 100:.1f}%"


def _number(value: float | None, spec: str) -> str:
    return UNKNOWN if value is None else format(value, spec)


def _cost(value: float | None, estimated: bool) -> str:
    return usd(value) + ("*" if estimated and value is not None else "")


COLUMNS = (
    "Model",
    "Rollouts",
    "Failed",
    f"Mean reward [{CONFIDENCE:.0%} CI]",
    "Pass rate",
    "Total cost (USD)",
    "Cost / rollout (USD)",
    "Cost / reward point (USD)",
    "Input tokens / rollout",
    "Output tokens / rollout",
    "Latency p50 (s)",
    "Latency p95 (s)",
)
JUDGE_COLUMN = "Judge cost (USD)"
"""After "Total cost (USD)", only in a comparison where some model's rollouts were scored by a paid LLM judge: most
comparisons have none, and a column of unknowns would say nothing. The CSV always has `judge_cost_usd`."""
JUDGE_NOTE = (
    "Costs include the LLM judge that scored the rollouts (its calls are billed like the policy's); the Judge cost "
    "column is that part of the total."
)


def judged(models: Sequence[ModelSummary]) -> bool:
    """Whether the report shows the judge's cost: some model's rollouts had one."""
    return any(m.judge_cost_usd is not None for m in models)


def columns(models: Sequence[ModelSummary]) -> tuple[str, ...]:
    """The table's header: COLUMNS, plus JUDGE_COLUMN when some model had a judge cost."""
    if not judged(models):
        return COLUMNS
    at = COLUMNS.index("Total cost (USD)") + 1
    return (*COLUMNS[:at], JUDGE_COLUMN, *COLUMNS[at:])


def table_cells(model: ModelSummary, *, judge_column: bool = False) -> list[str]:
    """One table row as plain text, the label first; the same figures go to Markdown and HTML. `judge_column`: the
    table has the judge's cost (see `columns`)."""
    estimated = model.cost_estimated
    judge = [_cost(model.judge_cost_usd, estimated)] if judge_column else []
    return [
        model.label,
        str(model.rollouts),
        str(model.failed),
        reward_with_interval(model),
        _percent(model.pass_rate),
        _cost(model.total_cost_usd, estimated),
        *judge,
        _cost(model.cost_per_rollout_usd, estimated),
        _cost(model.cost_per_reward_point_usd, estimated),
        _number(model.input_tokens_per_rollout, ",.0f"),
        _number(model.output_tokens_per_rollout, ",.0f"),
        _number(model.p50_latency_s, ".2f"),
        _number(model.p95_latency_s, ".2f"),
    ]


def _date(value: datetime) -> str:
    zone = value.tzname()
    return f"{value:%Y-%m-%d %H:%M}" + (f" {zone}" if zone else "")


def dataset_line(comparison: Comparison) -> str:
    return (
        f"Dataset: {comparison.dataset} · {comparison.rows} rows × {comparison.num_repeats} repeats · "
        f"{_date(comparison.created_at)}"
    )


def method_note() -> str:
    return (
        f"Method: the mean reward is over scored rollouts; failed rollouts are counted apart (the Failed "
        f"column), not as reward 0. The interval is a {CONFIDENCE:.0%} Student-t interval of that mean "
        f"({UNKNOWN} with fewer than 2 scored rollouts). Pass rate is the share of scored rollouts with reward "
        f">= 1; cost per reward point is the total cost over the sum of rewards. The recommendation is the "
        f"cheapest model per rollout among those whose mean lies within the best model's interval and with "
        f"<= {MAX_FAILURE_RATE_TO_RECOMMEND:.0%} failed rollouts. {UNKNOWN} means unknown."
    )


def _recommended(comparison: Comparison) -> str | None:
    return comparison.recommendation.cheapest_within_interval if comparison.recommendation else None


def _recommendation_text(comparison: Comparison) -> str:
    if comparison.recommendation is None:
        return "No recommendation: no model has a scored rollout."
    return comparison.recommendation.text


def left_off_note(left_off: Sequence[tuple[str, str]]) -> str | None:
    if not left_off:
        return None
    return "Not on the chart: " + "; ".join(f"{label} ({why})" for label, why in left_off) + "."


# ---------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"[\\`*|$~]|\](?=[(\[:])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
"""Backslash-escaped: code, emphasis, table cell breaks, math, strikethrough, and a `]` that would close a link.
An underscore inside a word emphasises nothing in CommonMark, so `simple_weather` and `[0.8, 0.9]` stay as they
are."""


def md_escape(text: str) -> str:
    """Literal text in Markdown: no emphasis, links, table breaks, math or raw HTML from a label."""
    text = " ".join(text.split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(lambda match: "\\" + match.group(0), text)


def render_markdown(comparison: Comparison, chart: Chart, *, image: str) -> str:
    recommended = _recommended(comparison)
    header = columns(comparison.models)
    lines = [
        f"# {md_escape(comparison.title)}",
        "",
        md_escape(dataset_line(comparison)),
        "",
        f"**{md_escape(_recommendation_text(comparison))}**",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for model in comparison.models:
        cells = [md_escape(cell) for cell in table_cells(model, judge_column=JUDGE_COLUMN in header)]
        if model.label == recommended:
            cells[0] = f"**{cells[0]}** (recommended)"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if any(m.cost_estimated for m in comparison.models):
        lines += [md_escape(f"* {ESTIMATED_NOTE}."), ""]
    if judged(comparison.models):
        lines += [md_escape(JUDGE_NOTE), ""]
    lines += [md_escape(method_note()), "", f"![reward vs cost]({urllib.parse.quote(image)})", ""]
    note = left_off_note(chart.left_off)
    if note:
        lines += [md_escape(note), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- CSV


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


def write_csv(models: Sequence[ModelSummary], handle: TextIO) -> None:
    """Every ModelSummary field, full precision, an empty cell for None."""
    fields = list(ModelSummary.model_fields)
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(fields)
    for model in models:
        writer.writerow([_csv_value(getattr(model, name)) for name in fields])


# ---------------------------------------------------------------- chart


def _split(models: Sequence[ModelSummary]) -> tuple[list[int], list[tuple[str, str]]]:
    charted: list[int] = []
    left_off: list[tuple[str, str]] = []
    for position, model in enumerate(models):
        why = [
            reason
            for reason, missing in (
                ("no scored rollouts", model.mean_reward is None),
                ("cost unknown", model.cost_per_rollout_usd is None),
            )
            if missing
        ]
        if why:
            left_off.append((model.label, " and ".join(why)))
        else:
            charted.append(position)
    return charted, left_off


def _tick(value: float, _position: object = None) -> str:
    if value == 0:
        return "0"
    return f"{value:.10f}".rstrip("0").rstrip(".")


def cost_scale(costs: Sequence[float]) -> Literal["linear", "log", "symlog"]:
    """Log when costs span more than LOG_SCALE_RATIO, else a linear axis squeezes the cheap models into one spot;
    symlog (linear near 0) when a free model must still be drawn at 0."""
    positive = [c for c in costs if c > 0]
    if not positive or max(positive) <= LOG_SCALE_RATIO * min(positive):
        return "linear"
    return "symlog" if any(c <= 0 for c in costs) else "log"


def _set_cost_scale(ax: Axes, costs: Sequence[float]) -> str:
    """Apply cost_scale with readable decimal ticks; returns the axis label, which names the scale."""
    scale = cost_scale(costs)
    ax.xaxis.set_major_formatter(FuncFormatter(_tick))
    if scale == "linear":
        return "cost per rollout (USD)"
    positive = [c for c in costs if c > 0]
    decades = math.log10(max(positive) / min(positive))
    if scale == "symlog":
        floor = 10.0 ** math.floor(math.log10(min(positive)))
        ax.set_xscale("symlog", linthresh=floor, linscale=0.5)
        ax.xaxis.set_major_formatter(FuncFormatter(_tick))
        ax.xaxis.set_minor_formatter(NullFormatter())
        return f"cost per rollout (USD, log scale; linear below {_tick(floor)} so free models show at 0)"
    ax.set_xscale("log")
    if decades < 4:
        ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_tick))
    ax.xaxis.set_minor_formatter(NullFormatter())
    return "cost per rollout (USD, log scale)"


HorizontalAlignment = Literal["left", "right"]
VerticalAlignment = Literal["bottom", "top"]
_OFFSETS: tuple[tuple[int, int, HorizontalAlignment, VerticalAlignment], ...] = (
    (7, 7, "left", "bottom"),
    (7, -7, "left", "top"),
    (-7, 7, "right", "bottom"),
    (-7, -7, "right", "top"),
)


def _place_labels(fig: Figure, ax: Axes, labels: Sequence[Annotation], marks: Sequence[Sequence[Line2D]]) -> None:
    """Greedy: the first of four corners around its point where a label stays inside the axes and clear of the
    labels placed before it and of the other models' points and interval bars (marks[i] are label i's own)."""
    fig.draw_without_rendering()  # settles layout and limits, so extents are final
    renderer = cast(FigureCanvasAgg, fig.canvas).get_renderer()  # type: ignore[no-untyped-call]  # Agg's is unannotated
    frame = ax.get_window_extent(renderer)
    mark_boxes = [[mark.get_window_extent(renderer) for mark in own] for own in marks]
    placed: list[Bbox] = []
    for index in sorted(range(len(labels)), key=lambda i: -labels[i].xy[1]):
        label = labels[index]
        obstacles = placed + [box for i, boxes in enumerate(mark_boxes) if i != index for box in boxes]
        fallback = None
        for dx, dy, ha, va in _OFFSETS:
            label.xyann = (dx, dy)
            label.set_horizontalalignment(ha)
            label.set_verticalalignment(va)
            box = label.get_window_extent(renderer)
            inside = box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
            if inside and fallback is None:
                fallback = (dx, dy, ha, va)
            if inside and not any(box.overlaps(other) for other in obstacles):
                break
        else:
            dx, dy, ha, va = fallback or _OFFSETS[0]
            label.xyann = (dx, dy)
            label.set_horizontalalignment(ha)
            label.set_verticalalignment(va)
        placed.append(label.get_window_extent(renderer))


def _build_figure(comparison: Comparison, charted: Sequence[int]) -> Figure:
    fig = Figure(figsize=FIGSIZE_IN, dpi=PNG_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # explicit canvas: nothing touches pyplot or the global backend
    ax = fig.add_subplot()
    ax.set_title("Mean reward vs cost per rollout", fontsize=12)
    ax.set_ylabel(f"mean reward ({CONFIDENCE:.0%} interval)")
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    recommended = _recommended(comparison)
    models = comparison.models
    if not charted:
        ax.set_xlabel("cost per rollout (USD)")
        ax.text(
            0.5,
            0.5,
            "No model has both a known cost and a mean reward",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="#666666",
        )
        return fig
    ax.set_xlabel(_set_cost_scale(ax, [models[i].cost_per_rollout_usd or 0.0 for i in charted]))
    best = next((m for m in models if comparison.recommendation and m.label == comparison.recommendation.best), None)
    handles: list[Line2D | Patch] = []
    if best is not None and best.ci_low is not None and best.ci_high is not None and best.ci_high > best.ci_low:
        ax.axhspan(best.ci_low, best.ci_high, color="#999999", alpha=0.15, linewidth=0, zorder=0)
        handles.append(Patch(color="#999999", alpha=0.3, label=f"best model's {CONFIDENCE:.0%} interval"))
    marks: list[list[Line2D]] = []
    labels: list[Annotation] = []
    for position in charted:
        model = models[position]
        x, y = model.cost_per_rollout_usd or 0.0, model.mean_reward or 0.0
        chosen = model.label == recommended
        color = RECOMMENDED_COLOR if chosen else POINT_COLOR
        own: list[Line2D] = []
        if model.ci_low is not None and model.ci_high is not None and model.ci_high > model.ci_low:
            own += ax.plot(
                [x, x],
                [model.ci_low, model.ci_high],
                color=color,
                linewidth=1.5,
                marker="_",
                markersize=10,
                markeredgewidth=1.5,
                alpha=0.8,
                zorder=2,
                gid=f"model-interval-{position}",
            )
        (point,) = ax.plot(
            [x],
            [y],
            linestyle="none",
            marker="*" if chosen else "o",
            markersize=16 if chosen else 8,
            color=color,
            markeredgecolor="white",
            markeredgewidth=0.8,
            zorder=3,
            gid=f"model-point-{position}",
        )
        marks.append([point, *own])
        labels.append(
            ax.annotate(
                model.label,
                (x, y),
                xytext=(7, 7),
                textcoords="offset points",
                fontsize=9,
                fontweight="bold" if chosen else "normal",
                color="#222222",
                parse_math=False,
                annotation_clip=False,
                in_layout=False,
                gid=f"model-label-{position}",
            )
        )
    ax.margins(x=0.12, y=0.15)
    if ax.get_xscale() == "symlog":
        ax.autoscale_view()
        low, high = ax.get_xlim()
        floor = cast(SymmetricalLogTransform, ax.xaxis.get_transform()).linthresh
        ax.set_xlim(max(low, -0.6 * floor), high)  # a margin left of 0, without negative cost ticks
    handles.append(Line2D([], [], linestyle="none", marker="o", color=POINT_COLOR, markersize=7, label="model"))
    if recommended is not None and any(models[i].label == recommended for i in charted):
        handles.append(
            Line2D([], [], linestyle="none", marker="*", color=RECOMMENDED_COLOR, markersize=12, label="recommended")
        )
    handles.append(Line2D([], [], color="#555555", marker="_", markersize=8, label=f"{CONFIDENCE:.0%} interval"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=9)
    _place_labels(fig, ax, labels, marks)
    return fig


def render_chart(comparison: Comparison) -> Chart:
    """Reward against cost per rollout, as SVG text and PNG bytes from one figure."""
    charted, left_off = _split(comparison.models)
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # the stubs list every rc key as a Literal
        fig = _build_figure(comparison, charted)
        svg = io.StringIO()
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=PNG_DPI)
    return Chart(svg=svg.getvalue(), png=png.getvalue(), charted=charted, left_off=left_off)


# ---------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d1d1f;
       margin: 2rem auto; max-width: 1400px; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.25rem; }
.dataset { color: #555; margin-top: 0; }
.recommendation { font-weight: 600; background: #fff4e5; border-left: 4px solid #d55e00; padding: 0.6rem 0.9rem; }
figure { margin: 1.5rem 0; }
figure svg { display: block; width: 100%; max-width: 800px; height: auto; }
figcaption, .note { color: #555; font-size: 0.9rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; font-variant-numeric: tabular-nums; }
th, td { padding: 0.35rem 0.6rem; border-bottom: 1px solid #ddd; white-space: nowrap; }
th { text-align: right; background: #f3f3f3; white-space: normal; vertical-align: bottom; }
td { text-align: right; }
th:first-child, td:first-child { text-align: left; }
td:first-child { white-space: normal; overflow-wrap: anywhere; min-width: 12rem; max-width: 22rem; }
tbody tr { background-color: #ffffff; }
tbody tr.recommended { background-color: #ffe8d2; }
tr.recommended td:first-child { font-weight: 700; }
.badge { font-size: 0.75rem; font-weight: 600; color: #fff; background: #d55e00; border-radius: 0.6rem;
         padding: 0.05rem 0.45rem; margin-left: 0.4rem; }
.model-id { color: #777; font-size: 0.8rem; }
"""

_XML_PROLOG = re.compile(r"\A\s*<\?xml[^>]*\?>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)


def _inline_svg(svg: str) -> str:
    """Drop the XML prolog and DOCTYPE (whose DTD URL a browser never needs) so the SVG sits inside HTML."""
    svg = _XML_PROLOG.sub("", svg, count=1)
    return svg.replace("<svg ", '<svg role="img" aria-labelledby="chart-title" ', 1)


def _html_row(position: int, model: ModelSummary, recommended: str | None, *, judge_column: bool) -> str:
    cells = [html.escape(cell) for cell in table_cells(model, judge_column=judge_column)]
    chosen = model.label == recommended
    label = cells[0]
    if chosen:
        label += '<span class="badge">recommended</span>'
    if model.model and model.model != model.label:
        label += f'<div class="model-id">{html.escape(model.model)}</div>'
    tds = [f"<td>{label}</td>"] + [f"<td>{cell}</td>" for cell in cells[1:]]
    attrs = f' data-model="{html.escape(model.label, quote=True)}" data-position="{position}"'
    if chosen:
        attrs += ' class="recommended"'
    return f"<tr{attrs}>" + "".join(tds) + "</tr>"


def render_html(comparison: Comparison, chart: Chart) -> str:
    recommended = _recommended(comparison)
    esc = html.escape
    header = columns(comparison.models)
    head = "".join(f'<th scope="col">{esc(column)}</th>' for column in header)
    judge_column = JUDGE_COLUMN in header
    rows = "\n".join(_html_row(i, m, recommended, judge_column=judge_column) for i, m in enumerate(comparison.models))
    notes = []
    if any(m.cost_estimated for m in comparison.models):
        notes.append(f'<p class="note">* {esc(ESTIMATED_NOTE)}.</p>')
    if judge_column:
        notes.append(f'<p class="note" id="judge-note">{esc(JUDGE_NOTE)}</p>')
    notes.append(f'<p class="note">{esc(method_note())}</p>')
    left_off = left_off_note(chart.left_off)
    left_off_html = f'<p class="note" id="left-off">{esc(left_off)}</p>' if left_off else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(comparison.title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{esc(comparison.title)}</h1>
<p class="dataset">{esc(dataset_line(comparison))}</p>
<p class="recommendation" id="recommendation">{esc(_recommendation_text(comparison))}</p>
<figure id="chart">
{_inline_svg(chart.svg)}
<figcaption id="chart-title">Reward vs cost: mean reward with its {CONFIDENCE:.0%} interval against cost per \
rollout, one point per model with a known cost and a mean reward.</figcaption>
{left_off_html}
</figure>
<div class="table-wrap">
<table id="comparison-table">
<thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
</div>
{"".join(notes)}
</body>
</html>
"""
