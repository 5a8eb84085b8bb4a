"""One model comparison as `ng_compare_models` runs it: the servers started once, each model's rollouts collected and
resumable, the report written.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from nemo_gym.collection.output_lock import OutputLock, refuse_input_as_output
from nemo_gym.collection.run import Interrupted, RunStopped, collect, command_line
from nemo_gym.compare.plan import ComparisonSettings, Variant
from nemo_gym.compare.report import write_report
from nemo_gym.compare.statistics import Comparison
from nemo_gym.config.errors import COMMAND_LINE, ConfigError
from nemo_gym.config.paths import project_root, resolve_input_path
from nemo_gym.config.secrets import Redactor
from nemo_gym.config.settings import check_setting_names, settings_problems
from nemo_gym.config.types import GlobalConfig
from nemo_gym.console import print_flushed
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.launch import Runner
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread

SETTING_KEYS = set(ComparisonSettings.model_fields)
EXIT_INTERRUPTED = 130


def settings_from(config: GlobalConfig) -> ComparisonSettings:
    check_setting_names(
        [k for k in config.data if config.origins.get(k) == COMMAND_LINE],
        SETTING_KEYS,
        "ng_compare_models",
        close_only=True,
        cutoff=0.75,
    )
    try:
        settings = ComparisonSettings.model_validate({k: v for k, v in config.data.items() if k in SETTING_KEYS})
    except ValidationError as exc:
        raise ConfigError(
            f"ng_compare_models settings are invalid: {settings_problems(exc)}. Required: "
            "+input_jsonl_fpath=... and +models=[...] or +model_servers=[...]"
        ) from None
    settings.input_jsonl_fpath = resolve_input_path(settings.input_jsonl_fpath)
    return settings


def with_free_head_port(config: GlobalConfig) -> GlobalConfig:
    """A head server of its own, so a comparison can run beside an ng_run on the default port."""
    head = dict(config.data.get("head_server") or {})
    head.setdefault("port", free_port(str(head.get("host", "127.0.0.1"))))
    return GlobalConfig(data={**config.data, "head_server": head}, origins=config.origins)


@contextlib.contextmanager
def hold_outputs(
    config: GlobalConfig, variants: list[Variant], settings: ComparisonSettings
) -> Iterator[dict[Path, OutputLock]]:
    """Every model's rollouts file locked for the whole comparison, before a server starts: a file a live
    collector (or another comparison) writes is refused at once, instead of after the models before it ran."""
    command = command_line(config)
    with contextlib.ExitStack() as stack:
        locks: dict[Path, OutputLock] = {}
        for variant in variants:
            refuse_input_as_output(settings.input_jsonl_fpath, variant.rollouts_path)
            variant.rollouts_path.parent.mkdir(parents=True, exist_ok=True)
            lock = stack.enter_context(OutputLock.acquire(variant.rollouts_path, command=command))
            if note := lock.note():
                print_flushed(note, err=lock.unprotected)
            locks[variant.rollouts_path] = lock
        yield locks


class ComparisonRun:
    """Starts the servers once, then collects every variant in turn; Ctrl-C stops after the current rollouts. The
    caller holds every variant's output lock (`hold_outputs`) and passes them in."""

    def __init__(
        self,
        config: GlobalConfig,
        variants: list[Variant],
        settings: ComparisonSettings,
        log: TextIO,
        locks: dict[Path, OutputLock],
    ) -> None:
        self.config = config
        self.variants = variants
        self.settings = settings
        self.locks = locks
        self.runner = Runner(config, startup_timeout_s=settings.startup_timeout_s, log=self._log_line)
        self.log = log
        self.stopped: list[str] = []

    def _log_line(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()

    def _handle_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.runner.request_stop)

    def run(self) -> int:
        """0 when every variant ran to its end (or its budget), 1 if a server died, 130 when interrupted."""
        self._handle_signals()
        head_app = build_head_app(self.config, self.runner.pids, self.runner.replicas)
        with serve_in_thread(head_app, host=self.config.head_host, port=self.config.head_port):
            self.runner.start_children()
            try:
                if not self.runner.wait_until_healthy():
                    return EXIT_INTERRUPTED if self.runner.stop_requested.is_set() else 1
                print_flushed(
                    f"ng_compare_models: {len(self.runner.children)} servers ready (logs in {self.log.name})."
                )
                return self._collect_all()
            finally:
                self.runner.stop_all()

    def _collect_all(self) -> int:
        for number, variant in enumerate(self.variants, start=1):
            if self.runner.stop_requested.is_set():
                return EXIT_INTERRUPTED
            if (dead := self.runner.dead_child()) is not None:
                self.runner.report_death(dead)
                return 1
            print_flushed(f"[{number}/{len(self.variants)}] {variant.label} -> {variant.rollouts_path}")
            try:
                settings = variant.collection_settings(self.settings)
                lock = self.locks[variant.rollouts_path]
                summary = asyncio.run(collect(self.config, settings, output_lock=lock))
            except Interrupted:
                return EXIT_INTERRUPTED
            except RunStopped as exc:
                self.stopped.append(f"{variant.label}: {exc}".splitlines()[0])
                print_flushed(f"  {variant.label} stopped early: {str(exc).splitlines()[0]}", err=True)
                continue
            finally:
                self._handle_signals()  # asyncio restores the default handlers when its run ends
            print_flushed(
                f"  {summary['this_run']['rollouts']} rollouts this run "
                f"({summary['this_run']['skipped_already_done']} already done); the file's {summary['rollouts']}: "
                f"mean reward {summary['mean_reward']}, cost ${summary['cost_usd'] or 0:.6f}{_judge_part(summary)}"
            )
        return 0


def _judge_part(summary: Mapping[str, Any]) -> str:
    """How much of the cost the LLM judge took, when the rollouts had one."""
    judge = summary.get("judge_cost_usd")
    return f" (judge ${judge:.6f} of it)" if isinstance(judge, int | float) else ""


def display_path(path: Path) -> str:
    """Relative to the working directory (or the repository) when inside it, as the user would type it."""
    for base in (Path.cwd(), project_root()):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


def report(comparison: Comparison, output_dir: Path, redactor: Redactor) -> None:
    files = write_report(comparison, output_dir)
    json_path = output_dir / "comparison.json"
    json_path.write_text(comparison.model_dump_json(indent=2) + "\n", encoding="utf-8")
    print_flushed(redactor.text(Path(files.markdown).read_text(encoding="utf-8")))
    print_flushed(f"Report: {files.markdown}, {files.csv}, {files.html}, {files.png}, {json_path}")
