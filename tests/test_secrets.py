"""No configured secret ever leaves the process that holds it: a whole collection runs as a user runs it, with
recognisable fake keys in env.yaml, upstreams that echo the credentials they receive in their error bodies, and
failing rows; then every stream of every command and every file written is searched for the keys."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nemo_gym.config.paths import project_root
from nemo_gym.config.secrets import REDACTED
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread

CANARY = "LEAKCANARY"
"""Every string secret below contains it, so a truncated or re-encoded fragment of one is found too."""
HEX = secrets.token_hex(8)
PRIMARY_KEY = f"sk-or-v1-{CANARY}-{HEX}"
FALLBACK_KEY = f"{CANARY}-fallback-{HEX}"  # not sk-shaped: only redaction by configured value catches it
HEADER_KEY = f"{CANARY}-header-{HEX}"
HF_TOKEN = f"hf_{CANARY}{HEX}"
WANDB_API_KEY = f"{CANARY}-wandb-{HEX}"
SERVICE_KEYS = [f"{CANARY}-list-a-{HEX}", f"{CANARY}-list-b-{HEX}"]
DB_PASSWORD = random.randint(910_000_000_000, 989_999_999_999)  # YAML reads it back as an int
MODEL = "openai/gpt-4-turbo"
NOT_SECRETS = {
    "max_output_tokens": 4096,
    "total_tokens": 1234,
    "tokens": 77,
    "tokenizer": "cl100k_base",
    "author": "nemo gym",
    "model": MODEL,
}
CONFIG_PATHS = (
    "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, "
    "resources_servers/simple_weather/configs/simple_weather.yaml]"
)
FORBIDDEN = (CANARY, str(DB_PASSWORD), "Bearer sk-", HEX)


def echoing_upstream() -> FastAPI:
    """A broken provider: every call gets a 503 whose message quotes the credentials it was sent, and whose long
    `metadata.raw` has the bare key where the model server cuts it off (at 300 characters), leaving a fragment."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        sent = f"Authorization: {request.headers.get('authorization')}, X-Api-Key: {request.headers.get('x-api-key')}"
        key = str(request.headers.get("authorization")).removeprefix("Bearer ")
        raw = f"{'diagnostics ' * 30}"[: 300 - len(key) // 2 - 5] + f" key={key} was refused"
        return JSONResponse({"error": {"message": f"Overloaded; you sent {sent}", "metadata": {"raw": raw}}}, 503)

    return app


@pytest.fixture
def upstreams() -> Iterator[tuple[OpenRouterEmulator, str, str]]:
    """The emulator (quoting the Authorization header in its errors) and the echoing fallback endpoint."""
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[PRIMARY_KEY], seed=0, echo_key_in_errors=True))
    with serve_in_thread(emulator.app()) as emulator_url, serve_in_thread(echoing_upstream()) as echo_url:
        yield emulator, emulator_url + "/api/v1", echo_url + "/v1"


@pytest.fixture
def workdir(tmp_path: Path, upstreams: tuple[OpenRouterEmulator, str, str]) -> Path:
    _emulator, base_url, echo_url = upstreams
    env: dict[str, Any] = {
        "policy_base_url": base_url,
        "policy_api_key": PRIMARY_KEY,
        "policy_model_name": MODEL,
        "head_server": {"port": free_port()},
        "hf_token": HF_TOKEN,
        "wandb_api_key": WANDB_API_KEY,
        "db_password": DB_PASSWORD,
        "service": {"api_keys": SERVICE_KEYS, "url": "https://example.org"},
        "notes": {**NOT_SECRETS, "password_hint": "${db_password}", "mentions": "key is ${hf_token}"},
        "policy_model": {
            "responses_api_models": {
                "openai_model": {
                    "headers": {"X-Api-Key": HEADER_KEY, "X-Title": "leak-test"},
                    "retry": {
                        "max_attempts": 2,
                        "max_elapsed_s": 30,
                        "initial_backoff_s": 0.01,
                        "max_backoff_s": 0.05,
                        "retry_after_cap_s": 0.05,
                    },
                    "fallbacks": [{"base_url": echo_url, "api_key": FALLBACK_KEY, "model": "echo/broken-model"}],
                }
            }
        },
    }
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(env))
    for folder in ("responses_api_models", "resources_servers", "responses_api_agents"):
        (tmp_path / folder).symlink_to(project_root() / folder)
    return tmp_path


def run(
    argv: list[str], cwd: Path, outputs: dict[str, str], label: str, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    outputs[f"{label} stdout"], outputs[f"{label} stderr"] = result.stdout, result.stderr
    return result


def collect(workdir: Path, outputs: dict[str, str], label: str, limit: int) -> subprocess.CompletedProcess[str]:
    return run(
        [
            "ng_collect_rollouts",
            "+agent_name=simple_weather_simple_agent",
            "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
            "+output_jsonl_fpath=results/rollouts.jsonl",
            f"+limit={limit}",
            "+num_samples_in_parallel=1",
            "+responses_create_params.max_output_tokens=512",
        ],
        workdir,
        outputs,
        label,
    )


def written_files(root: Path) -> dict[str, str]:
    """Every file under `root` except the inputs the user wrote (env.yaml) and the symlinked server folders."""
    found = {}
    for folder, _dirs, files in os.walk(root):  # symlinks are not followed
        for name in files:
            path = Path(folder) / name
            if path != root / "env.yaml" and not path.is_symlink():
                found[str(path.relative_to(root))] = path.read_text(encoding="utf-8", errors="replace")
    return found


def leaks(texts: dict[str, str]) -> list[str]:
    return [
        f"{where}: {secret!r} at ...{text[max(0, text.find(secret) - 120) : text.find(secret) + 60]!r}"
        for where, text in texts.items()
        for secret in FORBIDDEN
        if secret in text
    ]


@pytest.mark.slow
def test_a_whole_collection_leaks_no_secret_anywhere(
    workdir: Path, upstreams: tuple[OpenRouterEmulator, str, str]
) -> None:
    emulator, base_url, _echo_url = upstreams
    outputs: dict[str, str] = {}

    # The canary is live: this emulator does put the key into its error bodies.
    echoed = httpx.post(
        base_url + "/chat/completions", json={}, headers={"Authorization": f"Bearer {PRIMARY_KEY}"}, timeout=5
    )
    assert PRIMARY_KEY in echoed.text

    dumped = run(["ng_dump_config", CONFIG_PATHS], workdir, outputs, "ng_dump_config")
    assert dumped.returncode == 0, dumped.stderr
    dump = yaml.safe_load(dumped.stdout)
    assert {k: dump["notes"][k] for k in NOT_SECRETS} == NOT_SECRETS
    assert dump["policy_model_name"] == MODEL and dump["service"]["url"] == "https://example.org"
    assert dump["db_password"] == REDACTED and dump["service"]["api_keys"] == [REDACTED, REDACTED]
    assert dump["notes"]["password_hint"] == REDACTED and dump["notes"]["mentions"] == f"key is {REDACTED}"

    ng_run = CommandProcess(["ng_run", CONFIG_PATHS], cwd=workdir)
    try:
        assert ng_run.wait_for("ng_run ready", timeout_s=90), ng_run.output
        head = f"http://127.0.0.1:{yaml.safe_load((workdir / 'env.yaml').read_text())['head_server']['port']}"
        served_config = httpx.get(head + "/config", timeout=5)
        outputs["GET /config"] = served_config.text
        outputs["GET /instances"] = httpx.get(head + "/instances", timeout=5).text
        assert {k: served_config.json()["notes"][k] for k in NOT_SECRETS} == NOT_SECRETS

        # The first rollout's first model call fails on the primary and then on the echoing fallback endpoint: an
        # outage, which the collector reports (the echoed key redacted) before the rollout runs again.
        emulator.inject(MODEL, ["server_error", "timeout"])
        first = collect(workdir, outputs, "collect 1", limit=4)
        assert first.returncode == 0, first.stderr[-3000:]
        output = workdir / "results" / "rollouts.jsonl"
        with output.open("a") as handle:  # a crash mid-write: the next run moves the fragment to .torn
            handle.write(output.read_text().splitlines()[-1][:200])
        second = collect(workdir, outputs, "collect 2", limit=6)
        assert second.returncode == 0, second.stderr[-3000:]
        assert (workdir / "results" / "rollouts.jsonl.torn").exists()

        model_url = json.loads(outputs["GET /instances"])["instances"]["policy_model"]["url"]
        emulator.inject(MODEL, ["bad_gateway", "unavailable"])
        error = httpx.post(model_url + "/v1/responses", json={"input": "Weather in Paris?"}, timeout=30)
        outputs["model server error"] = error.text
        assert error.status_code == 503 and REDACTED in error.text
        invalid = httpx.post(model_url + "/v1/responses", content=f"not json {PRIMARY_KEY}", timeout=10)
        outputs["model server 400"] = invalid.text
        assert invalid.status_code == 400

        ng_run.send(signal.SIGINT, group=True)
        assert ng_run.wait(timeout_s=30) == 0
    finally:
        ng_run.close()
        outputs["ng_run"] = ng_run.output

    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 6 and not [r for r in records if r["error"]], "the 503s were an outage, not a sample"
    outage = next(line for line in outputs["collect 1 stderr"].splitlines() if line.startswith("Outage: "))
    assert REDACTED in outage and "HTTP 503" in outage, "the echoing fallback's answer, its key redacted"
    assert all(r["models"] == [MODEL] and r["usage"]["total_tokens"] > 0 for r in records)
    assert any(
        r.path.endswith("/chat/completions") and r.headers["authorization"] == f"Bearer {PRIMARY_KEY}"
        for r in emulator.requests
    ), "the primary key was really used"
    assert emulator.faults_injected["server_error"] == 1 and emulator.faults_injected["bad_gateway"] == 1
    assert "retrying" in outputs["ng_run"], "the servers' own log lines are part of what is searched"

    files = written_files(workdir)
    assert {"results/rollouts.jsonl", "results/rollouts.metrics.json", "results/rollouts.jsonl.torn"} <= set(files)
    found = leaks({**outputs, **files})
    assert not found, "secrets leaked:\n" + "\n".join(found)


@pytest.mark.slow
def test_a_rejected_key_echoed_back_at_start_up_is_not_shown(workdir: Path) -> None:
    """The preflight's 401 quotes the key, and ng_run shows the start-up failure with the servers' last lines."""
    rejected = f"sk-or-v1-{CANARY}-rejected-{HEX}-" + "0123456789" * 16  # long: the message is cut inside it
    outputs: dict[str, str] = {}

    result = run(["ng_run", CONFIG_PATHS, f"+policy_api_key={rejected}"], workdir, outputs, "ng_run", timeout_s=90)

    assert result.returncode == 1 and "rejected the API key" in result.stdout + result.stderr
    assert REDACTED in result.stdout + result.stderr
    found = leaks({**outputs, **written_files(workdir)})
    assert not found, "secrets leaked:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "override",
    [
        "+policy_model.responses_api_models.openai_model.max_concurrent_requests=${wandb_api_key}",
        "+policy_model.responses_api_models.openai_model.fallbacks=[{base_url: x, model: y, api_key: ${db_password}}]",
        f"+policy_model.responses_api_models.openai_model.timeout_s={HF_TOKEN}",
    ],
)
def test_configuration_errors_never_quote_a_secret(workdir: Path, override: str) -> None:
    outputs: dict[str, str] = {}

    result = run(["ng_run", CONFIG_PATHS, override], workdir, outputs, "ng_run")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Invalid config for instance 'policy_model'" in result.stderr
    found = leaks({**outputs, **written_files(workdir)})
    assert not found, "secrets leaked:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "command",
    [
        "ng_dump_config",
        "ng_run",
        "ng_collect_rollouts",
    ],
)
def test_a_malformed_override_holding_a_secret_is_not_echoed(workdir: Path, command: str) -> None:
    outputs: dict[str, str] = {}

    result = run([command, CONFIG_PATHS, f"+wandb_api_key=[{WANDB_API_KEY}"], workdir, outputs, command)

    assert result.returncode == 2 and "Cannot parse the command-line override '+wandb_api_key=" in result.stderr
    found = leaks(outputs)
    assert not found, "secrets leaked:\n" + "\n".join(found)


def test_the_emulator_does_not_echo_a_malformed_keys_override(tmp_path: Path) -> None:
    outputs: dict[str, str] = {}

    result = run(["ng_openrouter_emulator", f"+keys=[{FALLBACK_KEY}"], tmp_path, outputs, "ng_openrouter_emulator")

    assert result.returncode == 2 and "Cannot parse the command-line override '+keys=" in result.stderr
    assert not leaks(outputs)
