"""ng_demo for an environment with an LLM judge: it detects the `judge_model` reference in the environment's config,
builds the emulator's and ng_run's command lines for an offline judge, and starts and stops the emulator as a
subprocess that a real judge_model server can use. Environments without a judge get the commands they always had.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nemo_gym.cli import demo
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.paths import project_root
from nemo_gym.servers.processes import free_port
from nemo_gym.testing.cluster import serve_config
from responses_api_models.openai_model.app import OpenAIModelConfig

JUDGE_REF = {"type": "responses_api_models", "name": "judge_model"}
VERDICT = "[[A=B]] equivalent"


def judge_environment_config(name: str, judge_ref: dict[str, Any]) -> dict[str, Any]:
    """An environment config shaped like math_with_judge's: the resources server names its judge model server."""
    return {
        name: {
            "resources_servers": {
                name: {
                    "entrypoint": "app.py",
                    "judge_model_server": judge_ref,
                    "judge_responses_create_params": {"input": []},
                }
            }
        },
        f"{name}_simple_agent": {
            "responses_api_agents": {
                "simple_agent": {
                    "entrypoint": "app.py",
                    "resources_server": {"type": "resources_servers", "name": name},
                    "model_server": {"type": "responses_api_models", "name": "policy_model"},
                }
            }
        },
    }


def write_environment(root: Path, name: str, config: dict[str, Any], replies: str | None = None) -> Path:
    """resources_servers/<name>/configs/<name>.yaml under `root` (and data/judge_replies.jsonl when given)."""
    folder = root / "resources_servers" / name
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(config))
    if replies is not None:
        (folder / "data").mkdir()
        (folder / "data" / "judge_replies.jsonl").write_text(replies)
    return folder / "configs" / f"{name}.yaml"


# ------------------------------------------------------------------------------------------------ detection


def test_a_judge_model_reference_anywhere_in_the_config_is_detected() -> None:
    assert demo.references_judge_model(judge_environment_config("my_judge_env", JUDGE_REF))
    assert demo.references_judge_model({"a": [{"b": {"judges": [JUDGE_REF]}}]})  # inside lists too


@pytest.mark.parametrize(
    "config",
    [
        judge_environment_config("env", {"type": "responses_api_models", "name": "policy_model"}),
        {"x": {"type": "resources_servers", "name": "judge_model"}},
        {"judge_model": {"responses_api_models": {"openai_model": {"model": "judge_model"}}}},
        {},
        [],
        "judge_model",
    ],
)
def test_configs_without_a_judge_model_reference_are_not_judge_environments(config: Any) -> None:
    assert not demo.references_judge_model(config)


def test_uses_judge_reads_the_environment_config_file(tmp_path: Path) -> None:
    judged = write_environment(tmp_path, "judged", judge_environment_config("judged", JUDGE_REF))

    assert demo.uses_judge(judged)
    assert not demo.uses_judge(project_root() / demo.environment_config("simple_weather"))


def test_a_broken_environment_config_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    broken = write_environment(tmp_path, "broken", {})
    broken.write_text("broken: [unclosed\n")

    with pytest.raises(ConfigError, match="broken.yaml"):
        demo.uses_judge(broken)


def test_plan_judge_uses_the_environments_judge_replies_when_it_has_them(tmp_path: Path) -> None:
    write_environment(tmp_path, "with_replies", judge_environment_config("with_replies", JUDGE_REF), replies="")
    write_environment(tmp_path, "without_replies", judge_environment_config("without_replies", JUDGE_REF))
    write_environment(tmp_path, "no_judge", judge_environment_config("no_judge", {**JUDGE_REF, "name": "policy"}))
    taken = free_port()

    with_replies = demo.plan_judge("with_replies", root=tmp_path, exclude_ports={taken})
    without_replies = demo.plan_judge("without_replies", root=tmp_path)

    assert with_replies is not None and without_replies is not None
    assert with_replies.replies == "resources_servers/with_replies/data/judge_replies.jsonl"
    assert without_replies.replies is None
    assert with_replies.port != taken
    assert with_replies.base_url == f"http://127.0.0.1:{with_replies.port}/api/v1"
    assert demo.plan_judge("no_judge", root=tmp_path) is None


# ------------------------------------------------------------------------------------------------ command lines


def test_environments_without_a_judge_get_the_commands_they_always_had() -> None:
    run = demo.run_command("simple_weather", 9000, token_info=True)
    collect = demo.collect_command("mcqa", 9000, {"limit": 3, "shuffle": True})

    assert run == [
        "ng_run",
        "+config_paths=[responses_api_models/local_model/configs/local_model.yaml, "
        "resources_servers/simple_weather/configs/simple_weather.yaml]",
        "+head_server.port=9000",
        "+policy_model.responses_api_models.local_model.return_token_id_information=true",
    ]
    assert collect == [
        "ng_collect_rollouts",
        "+agent_name=mcqa_simple_agent",
        "+input_jsonl_fpath=resources_servers/mcqa/data/example.jsonl",
        "+head_server.port=9000",
        "+overwrite=true",
        "+num_samples_in_parallel=4",
        "+output_jsonl_fpath=results/demo_mcqa_rollouts.jsonl",
        "+limit=3",
        "+shuffle=true",
    ]


def test_a_judge_environment_runs_judge_model_pointed_at_the_emulator() -> None:
    plan = demo.JudgePlan(port=8123, replies="resources_servers/my_env/data/judge_replies.jsonl")

    run = demo.run_command("my_env", 9000, judge=plan)

    assert run == [
        "ng_run",
        "+config_paths=[responses_api_models/local_model/configs/local_model.yaml, "
        "resources_servers/my_env/configs/my_env.yaml, responses_api_models/openai_model/configs/judge_model.yaml]",
        "+head_server.port=9000",
        "+judge_base_url=http://127.0.0.1:8123/api/v1",
        "+judge_api_key=sk-or-v1-ng-demo-judge",
        "+judge_model_name=openai/gpt-4o-mini",
    ]
    assert plan.emulator_command() == [
        "ng_openrouter_emulator",
        "+port=8123",
        "+keys=[sk-or-v1-ng-demo-judge]",
        "+scripted_replies=[resources_servers/my_env/data/judge_replies.jsonl]",
    ]
    assert demo.JudgePlan(port=8123).emulator_command() == [
        "ng_openrouter_emulator",
        "+port=8123",
        "+keys=[sk-or-v1-ng-demo-judge]",
    ]


def test_the_judge_overrides_resolve_judge_model_yaml_into_a_valid_openrouter_model_server(tmp_path: Path) -> None:
    plan = demo.JudgePlan(port=8123)
    # the real ng_run command line of a judge environment, with simple_weather standing in for its config
    args = demo.run_command("simple_weather", 9000, judge=plan)[1:]

    config = load_global_config(args, cwd=tmp_path)  # no env.yaml there: the command line alone must suffice

    block = config.data["judge_model"]["responses_api_models"]["openai_model"]
    assert block["base_url"] == plan.base_url
    assert block["api_key"] == "sk-or-v1-ng-demo-judge" and block["model"] == "openai/gpt-4o-mini"
    judge = OpenAIModelConfig.model_validate({k: v for k, v in block.items() if k != "entrypoint"})
    assert judge.model == "openai/gpt-4o-mini"


def test_judge_model_yaml_without_judge_keys_is_the_usual_missing_value_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_global_config([f"+config_paths=[{demo.JUDGE_MODEL_CONFIG}]"], cwd=tmp_path)

    message = str(info.value)
    assert "judge_model.responses_api_models.openai_model.base_url" in message
    assert "judge_base_url" in message and "env.yaml" in message and "+judge_base_url=..." in message


# ------------------------------------------------------------------------------------------------ the emulator process


@pytest.fixture
def this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subprocesses (`ng_openrouter_emulator`) run this checkout's code."""
    paths = [str(project_root()), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))


def session_processes(session_id: int) -> list[int]:
    """Live processes of a session: the emulator runs in its own, so its children would show here."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == session_id:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def replies_root(tmp_path: Path) -> Path:
    data = tmp_path / "resources_servers" / "judged" / "data"
    data.mkdir(parents=True)
    rule = {"when_all": ["Expected: 42", "Generated: 42"], "reply": VERDICT}
    (data / "judge_replies.jsonl").write_text(json.dumps(rule) + "\n")
    return tmp_path


def test_the_emulator_starts_answers_and_stops_with_nothing_left(this_checkout: None, replies_root: Path) -> None:
    plan = demo.JudgePlan(port=free_port(), replies="resources_servers/judged/data/judge_replies.jsonl")

    emulator = demo.start_emulator(plan, cwd=replies_root)
    try:
        models = httpx.get(plan.base_url + "/models", timeout=10, trust_env=False)
        assert models.status_code == 200
        assert "openai/gpt-4o-mini" in [m["id"] for m in models.json()["data"]]
        body = {"model": plan.model_name, "messages": [{"role": "user", "content": "Expected: 42\nGenerated: 42"}]}
        headers = {"Authorization": f"Bearer {plan.key}"}
        verdict = httpx.post(plan.base_url + "/chat/completions", json=body, headers=headers, trust_env=False)
        assert verdict.json()["choices"][0]["message"]["content"] == VERDICT
        other_key = {"Authorization": "Bearer sk-or-v1-someone-else"}
        assert httpx.post(plan.base_url + "/chat/completions", json=body, headers=other_key).status_code == 401
        pid = emulator.process.pid
        assert session_processes(pid) == [pid]
    finally:
        demo.stop(emulator)

    assert emulator.process.returncode == 0, emulator.output  # Ctrl-C, as a user stops it: a clean exit
    assert "ng_openrouter_emulator stopped." in emulator.output
    assert session_processes(pid) == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(plan.base_url + "/models", timeout=5, trust_env=False)


def test_an_emulator_that_cannot_start_is_reported_and_not_left_running(this_checkout: None, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"when_all": ["x"]}\n')
    plan = demo.JudgePlan(port=free_port(), replies="bad.jsonl")

    with pytest.raises(RuntimeError) as info:
        demo.start_emulator(plan, cwd=tmp_path, timeout_s=30)

    assert "did not become ready" in str(info.value)
    assert 'bad.jsonl:1: missing "reply"' in str(info.value)


@pytest.fixture
def judge_emulator(this_checkout: None, replies_root: Path) -> Iterator[demo.JudgePlan]:
    plan = demo.JudgePlan(port=free_port(), replies="resources_servers/judged/data/judge_replies.jsonl")
    emulator = demo.start_emulator(plan, cwd=replies_root)
    try:
        yield plan
    finally:
        demo.stop(emulator)


def test_a_judge_model_server_gets_scripted_verdicts_from_the_demo_emulator(
    judge_emulator: demo.JudgePlan, tmp_path: Path
) -> None:
    args = demo.run_command("simple_weather", 9000, judge=judge_emulator)[1:]
    block = load_global_config(args, cwd=tmp_path).data["judge_model"]

    with serve_config({"judge_model": block}) as (config, _):  # preflights the demo key and model at start-up
        port = config.instances["judge_model"].config["port"]
        request = {"input": [{"role": "user", "content": "Expected: 42\nGenerated: 42"}]}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/responses", json=request, timeout=30, trust_env=False)

    assert answer.status_code == 200, answer.text
    response = answer.json()
    texts = [part["text"] for item in response["output"] if item["type"] == "message" for part in item["content"]]
    assert texts == [VERDICT]
    assert response["usage"]["input_tokens"] > 0


# ------------------------------------------------------------------------------------------------ ng_demo's main

FAKE_NG_RUN = """#!{python}
import json, pathlib, signal, sys, time
out = pathlib.Path({out!r})
(out / "ng_run_argv.json").write_text(json.dumps(sys.argv[1:]))
def stopped(*_):
    (out / "ng_run_stopped").write_text("SIGINT")
    sys.exit(0)
signal.signal(signal.SIGINT, stopped)
print("ng_run ready", flush=True)
while True:
    time.sleep(0.1)
"""
FAKE_COLLECT = """#!{python}
import json, os, pathlib, signal, sys, time
import httpx
out = pathlib.Path({out!r})
judge = dict(a[1:].split("=", 1) for a in json.loads((out / "ng_run_argv.json").read_text()) if a.startswith("+judge_"))
body = {{"model": judge["judge_model_name"], "messages": [{{"role": "user", "content": "Expected: 42 Generated: 42"}}]}}
answer = httpx.post(judge["judge_base_url"] + "/chat/completions", json=body, trust_env=False,
                    headers={{"Authorization": "Bearer " + judge["judge_api_key"]}})
(out / "verdict.txt").write_text(answer.json()["choices"][0]["message"]["content"])
if "+interrupt=true" in sys.argv:
    os.kill(os.getppid(), signal.SIGINT)
    time.sleep(30)
"""


@pytest.fixture
def stand_ins(this_checkout: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root holding a judge environment, and stand-ins for ng_run (ready at once, records its command
    line and its Ctrl-C) and ng_collect_rollouts (asks the judge as judge_model would) on PATH; the real emulator."""
    root = tmp_path / "project"
    rule = {"when_all": ["Expected: 42", "Generated: 42"], "reply": VERDICT}
    write_environment(root, "judged", judge_environment_config("judged", JUDGE_REF), json.dumps(rule) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in (("ng_run", FAKE_NG_RUN), ("ng_collect_rollouts", FAKE_COLLECT)):
        (bin_dir / name).write_text(script.format(python=sys.executable, out=str(tmp_path)))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return root


def run_demo(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """ng_demo on `root` as its project root."""
    code = (
        "import pathlib, sys; from nemo_gym.cli import demo; "
        f"demo.project_root = lambda: pathlib.Path({str(root)!r}); demo.main(sys.argv[1:])"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def emulator_port(ng_run_argv: list[str]) -> int:
    url = next(a for a in ng_run_argv if a.startswith("+judge_base_url=")).split("=", 1)[1]
    return int(url.split(":")[2].split("/")[0])


def test_ng_demo_runs_a_judge_environment_against_the_emulator_and_stops_it(stand_ins: Path) -> None:
    out = stand_ins.parent

    result = run_demo(stand_ins, "+environment=judged")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "$ ng_openrouter_emulator +port=" in result.stdout
    assert "judge: judge_model is the offline OpenRouter emulator at http://127.0.0.1:" in result.stdout
    assert "scripted verdicts from resources_servers/judged/data/judge_replies.jsonl" in result.stdout
    argv = json.loads((out / "ng_run_argv.json").read_text())
    assert f"{demo.JUDGE_MODEL_CONFIG}]" in argv[0]
    assert (out / "verdict.txt").read_text() == VERDICT  # the emulator answered while collection ran
    assert (out / "ng_run_stopped").read_text() == "SIGINT"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{emulator_port(argv)}/api/v1/models", timeout=5, trust_env=False)


def test_ctrl_c_during_ng_demo_stops_ng_run_and_the_emulator(stand_ins: Path) -> None:
    out = stand_ins.parent

    result = run_demo(stand_ins, "+environment=judged", "+interrupt=true")

    assert result.returncode == 130, result.stdout + result.stderr
    assert (out / "verdict.txt").read_text() == VERDICT
    assert (out / "ng_run_stopped").read_text() == "SIGINT"
    argv = json.loads((out / "ng_run_argv.json").read_text())
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{emulator_port(argv)}/api/v1/models", timeout=5, trust_env=False)
