"""A NeMo Gym resources server, unchanged, served by ng_run's machinery: sessions either way (our header, NeMo Gym's
cookie), our agents' row envelopes, the judge's cost in the verify answer, a failed judge as a failed rollout, and
start-up errors that name what is wrong. Everything goes through real HTTP on loopback."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.types import GlobalConfig
from nemo_gym.emulator import EmulatorConfig, FaultRates, OpenRouterEmulator
from nemo_gym.http.server_client import SESSION_HEADER
from nemo_gym.servers.loading import prepare
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config

EMULATOR_KEY = "sk-or-v1-hosting-test-0000"

COUNTER_APP = """
from typing import Dict

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.server_utils import SESSION_ID_KEY


class CounterConfig(BaseResourcesServerConfig):
    pass


class AddRequest(BaseModel):
    count: int


class CounterSeed(BaseSeedSessionRequest):
    initial_count: int = 0


class CounterVerify(BaseVerifyRequest):
    expected_count: int


class CounterServer(SimpleResourcesServer):
    config: CounterConfig
    counters: Dict[str, int] = Field(default_factory=dict)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/add")(self.add)
        app.post("/read")(self.read)
        return app

    async def seed_session(self, request: Request, body: CounterSeed) -> BaseSeedSessionResponse:
        self.counters[request.session[SESSION_ID_KEY]] = body.initial_count
        return BaseSeedSessionResponse()

    async def add(self, request: Request, body: AddRequest) -> dict:
        session_id = request.session[SESSION_ID_KEY]
        self.counters[session_id] = self.counters.get(session_id, 0) + body.count
        return {"count": self.counters[session_id]}

    async def read(self, request: Request) -> dict:
        return {"count": self.counters.get(request.session[SESSION_ID_KEY], 0)}

    async def verify(self, request: Request, body: CounterVerify) -> BaseVerifyResponse:
        count = self.counters.pop(request.session[SESSION_ID_KEY], 0)
        return BaseVerifyResponse(**body.model_dump(), reward=float(count == body.expected_count))


if __name__ == "__main__":
    CounterServer.run_webserver()
"""

JUDGED_APP = """
from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.config_types import ModelServerRef
from nemo_gym.judge import call_judge, judge_failsafe
from nemo_gym.openai_utils import (
    NeMoGymEasyInputMessage,
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
)


class JudgedConfig(BaseResourcesServerConfig):
    judge_model_server: ModelServerRef
    judge_responses_create_params: NeMoGymResponseCreateParamsNonStreaming
    failsafe: bool = False


class JudgedVerify(BaseVerifyRequest):
    question: str


class JudgedServer(SimpleResourcesServer):
    config: JudgedConfig

    async def verify(self, body: JudgedVerify) -> BaseVerifyResponse:
        if self.config.failsafe:
            return await judge_failsafe(self._verify)(body=body)
        return await self._verify(body=body)

    async def _verify(self, body: JudgedVerify) -> BaseVerifyResponse:
        params = self.config.judge_responses_create_params.model_copy(deep=True)
        params.input = [
            NeMoGymEasyInputMessage(role="user", content=f"Grade this. Question: {body.question} Answer: "
                                    f"{body.response.output_text}")
        ]
        verdict = await call_judge(
            self.server_client,
            server_name=self.config.judge_model_server.name,
            url_path="/v1/responses",
            json=params,
            response_model=NeMoGymResponse,
        )
        return BaseVerifyResponse(**body.model_dump(), reward=float("[[YES]]" in verdict.output_text))
"""

TEMPLATED_APP = """
from pathlib import Path

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)


class TemplatedConfig(BaseResourcesServerConfig):
    template_fpath: str = "prompt_templates/grade.txt"


class TemplatedServer(SimpleResourcesServer):
    config: TemplatedConfig
    ray_enabled = False  # a class setting in NeMo Gym's servers, not a field

    def model_post_init(self, context: object) -> None:
        self._template = Path(self.config.template_fpath).read_text()

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        return BaseVerifyResponse(**body.model_dump(), reward=float(self._template.strip() == "grade me"))
"""

ASKING_APP = """
from fastapi import FastAPI
from pydantic import BaseModel

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.config_types import ModelServerRef
from nemo_gym.server_utils import get_response_json


class AskingConfig(BaseResourcesServerConfig):
    user_model_server: ModelServerRef


class AskRequest(BaseModel):
    question: str


class AskingServer(SimpleResourcesServer):
    config: AskingConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/ask_user")(self.ask_user)
        return app

    async def ask_user(self, body: AskRequest) -> dict:
        answer = await self.server_client.post(
            server_name=self.config.user_model_server.name,
            url_path="/v1/responses",
            json={"input": [{"role": "user", "content": body.question}]},
        )
        return {"user_says": str((await get_response_json(answer))["output"][-1]["content"][0]["text"])}

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        return BaseVerifyResponse(**body.model_dump(), reward=1.0)
"""

MISSING_NAME_APP = """
from nemo_gym.base_resources_server import SimpleResourcesServer
from nemo_gym.server_utils import NotProvidedAnywhere


class Server(SimpleResourcesServer):
    pass
"""


def response_with(text: str) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "created_at": 0,
        "model": "policy",
        "object": "response",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


def row(**fields: Any) -> dict[str, Any]:
    return {"responses_create_params": {"input": [{"role": "user", "content": "Is it so?"}]}, **fields}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with NeMo Gym server folders (no __init__.py, as NeMo Gym's have none)."""
    apps = (("ng_counter", COUNTER_APP), ("ng_judged", JUDGED_APP), ("ng_missing", MISSING_NAME_APP))
    for name, source in (*apps, ("ng_templated", TEMPLATED_APP), ("ng_asking", ASKING_APP)):
        folder = tmp_path / "resources_servers" / name
        folder.mkdir(parents=True)
        (folder / "app.py").write_text(textwrap.dedent(source))
        (folder / "requirements.txt").write_text("-e nemo-gym[dev] @ ../../\n")
    (tmp_path / "resources_servers/ng_templated/prompt_templates").mkdir()
    (tmp_path / "resources_servers/ng_templated/prompt_templates/grade.txt").write_text("grade me\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def counter_block(**extra: Any) -> dict[str, Any]:
    return {"ng_counter": {"resources_servers": {"ng_counter": {"entrypoint": "app.py", **extra}}}}


@pytest.fixture
def counter(project: Path) -> Iterator[httpx.Client]:
    with (
        serve_config(counter_block(domain="agent", verified=False, description="a counter", value="sessions")) as (
            config,
            _,
        ),
        httpx.Client(base_url=config.instances["ng_counter"].url(), trust_env=False, timeout=30) as client,
    ):
        yield client


def test_our_agents_row_envelope_opens_a_session_that_tools_and_verify_share(counter: httpx.Client) -> None:
    seeded = counter.post("/seed_session", json={"row": row(initial_count=2, expected_count=5)})
    assert seeded.status_code == 200
    session = {SESSION_HEADER: seeded.json()["session_id"]}

    assert counter.post("/add", json={"count": 3}, headers=session).json() == {"count": 5}
    assert counter.post("/read", json={}, headers=session).json() == {"count": 5}
    verdict = counter.post(
        "/verify", json={"row": row(initial_count=2, expected_count=5), "response": response_with("5")}, headers=session
    )
    assert verdict.status_code == 200
    body = verdict.json()
    assert body["reward"] == 1.0 and body["expected_count"] == 5
    # the record already holds the row and the trajectory: the answer does not repeat them
    assert "responses_create_params" not in body and "response" not in body
    assert "judge_usage" not in body  # no model was called


def test_sessions_of_different_rollouts_do_not_share_state(counter: httpx.Client) -> None:
    first = {SESSION_HEADER: counter.post("/seed_session", json={"row": row(initial_count=1)}).json()["session_id"]}
    second = {SESSION_HEADER: counter.post("/seed_session", json={"row": row(initial_count=10)}).json()["session_id"]}
    assert first != second
    counter.post("/add", json={"count": 1}, headers=first)
    assert counter.post("/read", json={}, headers=first).json() == {"count": 2}
    assert counter.post("/read", json={}, headers=second).json() == {"count": 10}


def test_nemo_gym_clients_carry_the_session_in_its_cookie(counter: httpx.Client) -> None:
    seeded = counter.post("/seed_session", json=row(initial_count=4))
    assert seeded.json() == {}  # NeMo Gym's own answer, unchanged for its clients
    cookie_name = "CounterServer___ng_counter"
    assert cookie_name in seeded.cookies
    cookie = {"cookie": f"{cookie_name}={seeded.cookies[cookie_name]}"}  # handed back by hand, as NeMo Gym's agents do
    counter.cookies.clear()
    assert counter.post("/add", json={"count": 1}, headers=cookie).json() == {"count": 5}
    verdict = counter.post("/verify", json={**row(expected_count=5), "response": response_with("5")}, headers=cookie)
    assert verdict.json()["reward"] == 1.0
    assert verdict.json()["responses_create_params"]["input"][0]["content"] == "Is it so?"  # NeMo Gym's echo


def test_close_session_ends_a_rollout_without_scoring_it(counter: httpx.Client) -> None:
    session = {SESSION_HEADER: counter.post("/seed_session", json={"row": row()}).json()["session_id"]}
    assert counter.post("/close_session", json={}, headers=session).json() == {"closed": True}
    assert counter.post("/close_session", json={}, headers=session).json() == {"closed": False}


def test_tool_arguments_that_do_not_validate_get_a_422_the_model_can_read(counter: httpx.Client) -> None:
    answer = counter.post("/add", json={"count": "many"})
    assert answer.status_code == 422
    assert "count" in answer.json()["error"]["message"]


def test_health_names_the_environment(counter: httpx.Client) -> None:
    health = counter.get("/health").json()
    assert health["status"] == "ok" and health["environment"].endswith("CounterServer")


@pytest.fixture
def judge_replies(tmp_path: Path) -> Path:
    path = tmp_path / "judge_replies.jsonl"
    rules = [
        {"when_all": ["Grade this", "Answer: forty-two"], "reply": "Correct. [[YES]]"},
        {"when_all": ["Grade this"], "reply": "Wrong. [[NO]]"},
    ]
    path.write_text("".join(json.dumps(rule) + "\n" for rule in rules))
    return path


def judged_cluster(emulator_url: str, *, api_key: str = EMULATOR_KEY, **extra: Any) -> dict[str, Any]:
    return {
        "judge_model": openai_model_block(
            emulator_url + "/api/v1", api_key=api_key, model="openai/gpt-4o-mini", retry={"max_attempts": 1}
        ),
        "ng_judged": {
            "resources_servers": {
                "ng_judged": {
                    "entrypoint": "app.py",
                    "judge_model_server": {"type": "responses_api_models", "name": "judge_model"},
                    "judge_responses_create_params": {"input": []},
                    **extra,
                }
            }
        },
    }


@pytest.fixture
def emulator_url(judge_replies: Path) -> Iterator[str]:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], scripted_replies=[judge_replies]))
    with serve_in_thread(emulator.app()) as url:
        yield url


@pytest.fixture
def failing_emulator_url() -> Iterator[str]:
    """Every model call answers 500, after the model server's start-up checks have passed."""
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], default_faults=FaultRates(server_error=1.0)))
    with serve_in_thread(emulator.app()) as url:
        yield url


def verify_judged(config: GlobalConfig, answer: str) -> httpx.Response:
    with httpx.Client(base_url=config.instances["ng_judged"].url(), trust_env=False, timeout=60) as client:
        return client.post("/verify", json={"row": row(question="6 x 7?"), "response": response_with(answer)})


def test_the_judges_tokens_and_cost_come_back_with_the_verdict(project: Path, emulator_url: str) -> None:
    with serve_config(judged_cluster(emulator_url)) as (config, _):
        right, wrong = verify_judged(config, "forty-two"), verify_judged(config, "forty-one")
    assert right.status_code == 200 and right.json()["reward"] == 1.0
    assert wrong.status_code == 200 and wrong.json()["reward"] == 0.0
    usage = right.json()["judge_usage"]
    assert usage["calls"] == 1 and usage["input_tokens"] > 0 and usage["cost"] > 0
    assert right.json()["judge_cost_by_model"] == {"openai/gpt-4o-mini": usage["cost"]}


def test_a_judge_that_fails_makes_a_failed_rollout_with_its_error_not_a_zero(
    project: Path, failing_emulator_url: str
) -> None:
    with serve_config(judged_cluster(failing_emulator_url)) as (config, _):
        answer = verify_judged(config, "forty-two")
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["type"] == "judge_error"
    assert "judge failed" in error["message"] and "500" in error["message"]
    assert "reward" not in answer.json()


def test_judge_failsafes_zero_reward_is_turned_into_the_same_failure(project: Path, failing_emulator_url: str) -> None:
    with serve_config(judged_cluster(failing_emulator_url, failsafe=True)) as (config, _):
        answer = verify_judged(config, "forty-two")
    assert answer.status_code == 502 and answer.json()["error"]["type"] == "judge_error"


def test_a_name_the_api_does_not_provide_fails_at_start_up_with_file_and_line(project: Path) -> None:
    block = {"ng_missing": {"resources_servers": {"ng_missing": {"entrypoint": "app.py"}}}}
    with pytest.raises(ConfigError) as caught:
        prepare(GlobalConfig(data=block, origins={}))
    message = str(caught.value)
    assert "resources_servers/ng_missing/app.py:3" in message
    assert "NotProvidedAnywhere" in message and "porting" in message


def test_nemo_gym_config_keys_are_accepted_and_unknown_ones_refused(project: Path) -> None:
    accepted = counter_block(
        domain="agent", verified=True, verified_url="https://example.com", description="d", value="v", num_workers=None
    )
    prepare(GlobalConfig(data=accepted, origins={}))
    with pytest.raises(ConfigError) as caught:
        prepare(GlobalConfig(data=counter_block(domian="agent"), origins={"ng_counter": "configs/x.yaml"}))
    message = str(caught.value)
    assert "unknown key 'domian'" in message and "did you mean 'domain'" in message and "configs/x.yaml" in message


def test_a_judge_reference_to_a_missing_instance_fails_at_start_up(project: Path) -> None:
    cluster = judged_cluster("http://127.0.0.1:9")
    del cluster["judge_model"]
    with pytest.raises(
        ConfigError, match="judge_model_server .* refers to responses_api_models instance 'judge_model'"
    ):
        prepare(GlobalConfig(data=cluster, origins={}))


def test_a_server_reads_files_relative_to_its_folder_as_python_app_py_there_would(project: Path) -> None:
    block = {"ng_templated": {"resources_servers": {"ng_templated": {"entrypoint": "app.py"}}}}
    with serve_config(block) as (config, servers):
        assert type(servers["ng_templated"]).working_directory(config.instances["ng_templated"]) == (
            project / "resources_servers/ng_templated"
        )
        with httpx.Client(base_url=config.instances["ng_templated"].url(), trust_env=False, timeout=30) as client:
            verdict = client.post("/verify", json={"row": row(), "response": response_with("x")})
    assert verdict.status_code == 200 and verdict.json()["reward"] == 1.0
    assert Path.cwd() == project  # the test process's own directory is left as it was


def test_model_calls_a_tool_makes_for_a_rollout_are_reported_with_its_verdict(project: Path, emulator_url: str) -> None:
    cluster = {
        "judge_model": judged_cluster(emulator_url)["judge_model"],
        "ng_asking": {
            "resources_servers": {
                "ng_asking": {
                    "entrypoint": "app.py",
                    "user_model_server": {"type": "responses_api_models", "name": "judge_model"},
                }
            }
        },
    }
    with (
        serve_config(cluster) as (config, _),
        httpx.Client(base_url=config.instances["ng_asking"].url(), trust_env=False, timeout=60) as client,
    ):
        session = {SESSION_HEADER: client.post("/seed_session", json={"row": row()}).json()["session_id"]}
        for question in ("Which city?", "Which day?"):
            assert client.post("/ask_user", json={"question": question}, headers=session).json()["user_says"]
        assert client.post("/ask_user", json={"question": "no session"}).status_code == 200  # not a rollout's
        verdict = client.post("/verify", json={"row": row(), "response": response_with("ok")}, headers=session)
    usage = verdict.json()["judge_usage"]
    assert verdict.json()["reward"] == 1.0 and usage["calls"] == 2 and usage["cost"] > 0
