"""`ng_viewer +jsonl_fpath=<rollouts.jsonl> [+host=127.0.0.1] [+port=N] [+output_html=<page.html> [+max_rows=N]]`

Browse the rollouts of ng_collect_rollouts: filter by reward, model, error and text; click one to read its
conversation (tool calls and results included), reward, the verifier's fields, tokens and cost. By default it serves
the page on loopback until Ctrl-C, paging through files of any size (and picking up rollouts appended meanwhile);
with +output_html it writes one self-contained page instead, to mail or archive.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import resolve_input_path
from nemo_gym.config.settings import validated_settings
from nemo_gym.console import fail, overrides_or_fail, print_flushed
from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.binding import exposure_warning, is_loopback
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import ReadyReportingServer, cannot_listen
from nemo_gym.viewer import DEFAULT_MAX_HTML_ROWS, RolloutIndex, ViewerInputError, build_app, write_html
from nemo_gym.viewer.records import file_size_label

MAX_WARNINGS_PRINTED = 20


class ViewerSettings(BaseModel):
    """The `+key=value` settings of ng_viewer."""

    model_config = ConfigDict(extra="forbid")
    jsonl_fpath: Path = Field(description="Rollouts written by ng_collect_rollouts")
    host: str = Field("127.0.0.1", description="Address to serve on; anything but loopback exposes the rollouts")
    port: int | None = Field(None, ge=1, le=65535, description="Default: a free port")
    output_html: Path | None = Field(None, description="Write one self-contained page here instead of serving")
    max_rows: int | None = Field(
        None, ge=1, description=f"Rollouts a written page may hold (default {DEFAULT_MAX_HTML_ROWS})"
    )


HINTS = {
    "port": "a port number from 1 to 65535",
    "max_rows": "a whole number >= 1",
    "jsonl_fpath": "the rollouts file, e.g. +jsonl_fpath=results/rollouts.jsonl",
}


def settings_from(overrides: JSONObject) -> ViewerSettings:
    settings = validated_settings(ViewerSettings, overrides, "ng_viewer", HINTS)
    if settings.max_rows is not None and settings.output_html is None:
        raise ConfigError(
            "+max_rows caps a written page; it needs +output_html=<page.html> (a served viewer pages "
            "through files of any size)."
        )
    settings.jsonl_fpath = resolve_input_path(settings.jsonl_fpath)
    return settings


def report_warnings(index: RolloutIndex) -> None:
    """Rollouts recorded more than once and the skipped lines, on stderr (the page lists them too)."""
    duplicate = index.duplicate_warning()
    if duplicate is not None:
        print_flushed(f"warning: {duplicate.text(index.path)}", err=True)
    problems = [*index.warnings, *([index.pending] if index.pending else [])]
    for warning in problems[:MAX_WARNINGS_PRINTED]:
        print_flushed(f"warning: {warning.text(index.path)}", err=True)
    if len(problems) > MAX_WARNINGS_PRINTED:
        print_flushed(f"warning: ... and {len(problems) - MAX_WARNINGS_PRINTED} more skipped lines.", err=True)


def serve(index: RolloutIndex, host: str, port: int | None) -> None:
    port = port or free_port(host)
    problem = cannot_listen(host, port, "ng_viewer")
    if problem is not None:  # its advice is for ng_run's instances; the viewer's own is simpler
        reason = problem.split(". ", 1)[0].rstrip(".")
        hint = (
            "Pass another +port=N, or leave +port out to get a free one."
            if "in use" in reason
            else "Pass +host=127.0.0.1 or another address of this machine."
        )
        fail(f"cannot serve on {host}:{port}: {reason}. {hint}", code=1)
    if not is_loopback(host):
        print_flushed(f"ng_viewer: {exposure_warning('the viewer', host)}", err=True)
    config = uvicorn.Config(
        build_app(index, host=host),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = ReadyReportingServer(
        config, ready_line=f"ng_viewer ready at http://{'[' + host + ']' if ':' in host else host}:{port}"
    )
    if not server.run_until_signalled():
        fail(f"cannot serve on {host}:{port} (is the port in use?)", code=1)
    print_flushed("ng_viewer stopped.")


def main(argv: Sequence[str] | None = None) -> None:
    overrides = overrides_or_fail(argv)
    try:
        settings = settings_from(overrides)
        index = RolloutIndex.load(settings.jsonl_fpath)
    except (ConfigError, ViewerInputError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # while indexing a big file
        fail("interrupted.", code=130)
    report_warnings(index)
    failed = sum(e.failed for e in index.entries)
    print_flushed(f"ng_viewer: {len(index.entries):,} rollouts ({failed:,} failed) in {index.path}")
    if settings.output_html is not None:
        try:
            written = write_html(index, settings.output_html, max_rows=settings.max_rows)
        except ViewerInputError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot write +output_html={settings.output_html}: {exc.strerror or exc}.", code=1)
        print_flushed(f"Wrote {written} ({file_size_label(written)}); open it in a browser, no server needed.")
        return
    serve(index, settings.host, settings.port)
    sys.exit(0)


if __name__ == "__main__":
    main()
