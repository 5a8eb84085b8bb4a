"""The viewer page: one HTML file with its CSS and JavaScript inline, and (written to disk) its data too.

The same page runs in both modes. Served, it asks the JSON API for each page of rollouts; written, it carries the
summaries and records as JSON in a `<script type="application/json">` tag and filters them itself. Records come
from models, so the page renders every piece of record text as text, and a Content-Security-Policy that allows
only this page's own script and style (by hash) stops anything injected from running even if that ever failed.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.protocol.types import JSONObject
from nemo_gym.viewer.records import RolloutIndex, ViewerInputError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "viewer"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# Inside a <script> element only `</script` or `<!--` could end it early; escaping every `<`, `>` and `&` keeps the
# JSON valid (they only occur inside strings) and the element intact. U+2028/9 are escaped for old parsers.
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_ESCAPE = re.compile("[<>&\u2028\u2029]")


@dataclass(frozen=True)
class Page:
    html: str
    csp: str


def _asset(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def embed_json(data: Any) -> str:
    """JSON that can sit inside a <script> element whatever strings it holds."""
    return _JSON_ESCAPE.sub(lambda m: _JSON_ESCAPES[m[0]], orjson.dumps(data).decode())


def render_page(*, title: str, data: Any = None) -> Page:
    """The page; `data` None means served mode (the script calls the API next to the page)."""
    css, js = _asset("viewer.css"), _asset("viewer.js")
    csp = (
        f"default-src 'none'; script-src {_sha256(js)}; style-src {_sha256(css)}; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    values = {
        "TITLE": html.escape(title),
        "CSP": html.escape(csp, quote=True),
        "CSS": css,
        "JS": js,
        "DATA": embed_json(data),
    }
    # One pass: text substituted in (the data above all) is never scanned for placeholders again.
    return Page(html=_PLACEHOLDER.sub(lambda m: values[m[1]], _asset("viewer.html")), csp=csp)


DEFAULT_MAX_HTML_ROWS = 2000
"""A written page holds every record and the browser parses them all at once; past this, serve the file instead."""


def standalone_data(index: RolloutIndex) -> JSONObject:
    """Everything the page needs without a server: summaries, search text and whole records, in file order."""
    with index.lock:
        return {
            "meta": index.meta(max_warnings=1000),
            "summaries": [e.summary() for e in index.entries],
            "search": index.search_texts(),
            "records": index.all_records(),
        }


def write_html(index: RolloutIndex, output: Path, *, max_rows: int | None = None) -> Path:
    """Write one self-contained page (no request leaves it); refuse files too big to load in one go."""
    limit = max_rows or DEFAULT_MAX_HTML_ROWS
    total = len(index.entries)
    if total > limit:
        raise ViewerInputError(
            f"{index.path} has {total:,} rollouts; a written page holds at most {limit:,} (the browser loads them "
            f"all at once). Serve it instead (ng_viewer +jsonl_fpath={index.path}), which pages through any size, or "
            f"raise the cap with +max_rows={total}."
        )
    if output.resolve() == index.path.resolve():
        raise ViewerInputError(
            f"+output_html={output} is the rollouts file itself; name another file, e.g. "
            f"{index.path.with_suffix('.html')}."
        )
    page = render_page(title=f"Rollouts: {index.path.name}", data=standalone_data(index))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page.html, encoding="utf-8")
    return output
