"""Replicas: calls spread over an instance's replicas by least in flight, a rollout's session stays on the replica
that opened it, an unreachable replica is skipped (or, holding a session, reported as unavailable), and the list
of replicas can come from the head server. Then the same through ng_run with `num_replicas`."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from nemo_gym.config.paths import project_root
from nemo_gym.http.pool import HttpPool
from nemo_gym.http.server_client import SESSION_HEADER, InstanceAddress, ServerCallError, ServerClient
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.emulated import write_rows
from nemo_gym.testing.fast_upstream import FastUpstream
from nemo_gym.testing.processes import collected_records

SIMPLE_WEATHER = str(project_root() / "resources_servers/simple_weather/configs/simple_weather.yaml")
AGENT = "simple_weather_simple_agent"


def replica_app(label: str, served: Counter[str], *, delay_s: float = 0.0) -> Starlette:
    """A stand-in replica: opens sessions named after itself, answers which replica served each call."""
    sessions = 0

    async def seed(_: Request) -> JSONResponse:
        nonlocal sessions
        sessions += 1
        served[label] += 1
        return JSONResponse({"session_id": f"{label}-{sessions}"})

    async def call(request: Request) -> JSONResponse:
        served[label] += 1
        await asyncio.sleep(delay_s)
        return JSONResponse({"replica": label, "session": request.headers.get(SESSION_HEADER)})

    return Starlette(
        routes=[
            Route("/seed_session", seed, methods=["POST"]),
            Route("/call", call, methods=["POST"]),
            Route("/verify", call, methods=["POST"]),
        ]
    )


@pytest.fixture
def two_replicas() -> Iterator[tuple[list[str], Counter[str]]]:
    served: Counter[str] = Counter()
    with serve_in_thread(replica_app("a", served)) as a, serve_in_thread(replica_app("b", served)) as b:
        yield [a, b], served


def client_for(urls: list[str], pool: HttpPool, **kwargs: Any) -> ServerClient:
    return ServerClient({"env": InstanceAddress("env", "resources_servers", "x", urls[0], tuple(urls))}, pool, **kwargs)


def test_calls_spread_evenly_over_idle_replicas(two_replicas: tuple[list[str], Counter[str]]) -> None:
    urls, served = two_replicas

    async def main() -> None:
        async with HttpPool() as pool:
            servers = client_for(urls, pool)
            for _ in range(10):
                await servers.post("env", "/call", {})

    asyncio.run(main())
    assert served == {"a": 5, "b": 5}


def test_a_slow_replica_gets_fewer_calls_than_a_fast_one() -> None:
    served: Counter[str] = Counter()
    with (
        serve_in_thread(replica_app("slow", served, delay_s=0.2)) as slow,
        serve_in_thread(replica_app("fast", served, delay_s=0.01)) as fast,
    ):

        async def main() -> None:
            async with HttpPool() as pool:
                servers = client_for([slow, fast], pool)

                async def caller() -> None:
                    for _ in range(10):
                        await servers.post("env", "/call", {})

                await asyncio.gather(*(caller() for _ in range(4)))

        asyncio.run(main())
    assert served["slow"] + served["fast"] == 40
    assert served["fast"] >= 3 * served["slow"], served


def test_every_call_of_a_session_goes_to_the_replica_that_opened_it(
    two_replicas: tuple[list[str], Counter[str]],
) -> None:
    urls, _ = two_replicas

    async def rollout(servers: ServerClient) -> list[str]:
        session = (await servers.post("env", "/seed_session", {}))["session_id"]
        headers = {SESSION_HEADER: session}
        answers = [await servers.post("env", "/call", {}, headers=headers) for _ in range(3)]
        answers.append(await servers.post("env", "/verify", {}, headers=headers))
        assert all(a["session"] == session for a in answers)
        return [session.split("-")[0]] + [a["replica"] for a in answers]

    async def main() -> tuple[list[list[str]], int]:
        async with HttpPool() as pool:
            servers = client_for(urls, pool)
            routes = await asyncio.gather(*(rollout(servers) for _ in range(20)))
            return routes, len(servers.sessions)

    routes, remembered = asyncio.run(main())
    assert all(len(set(route)) == 1 for route in routes), routes  # seeded on X, every later call on X
    assert Counter(route[0] for route in routes).keys() == {"a", "b"}  # and the sessions themselves spread
    assert remembered == 0  # /verify ended every session's route


def test_an_unreachable_replica_is_skipped_and_a_session_on_it_is_reported_unavailable(
    two_replicas: tuple[list[str], Counter[str]],
) -> None:
    (live, _), served = two_replicas
    dead = f"http://127.0.0.1:{free_port()}"

    async def main() -> ServerCallError:
        async with HttpPool() as pool:
            servers = client_for([dead, live], pool)
            for _ in range(6):
                assert (await servers.post("env", "/call", {}))["replica"] == "a"
            servers.sessions.remember("lost-1", dead)
            with pytest.raises(ServerCallError) as caught:
                await servers.post("env", "/call", {}, headers={SESSION_HEADER: "lost-1"})
            return caught.value

    error = asyncio.run(main())
    assert served["a"] == 6
    assert error.unavailable and "session lost-1" in str(error) and "start again" in str(error)


def test_when_no_replica_answers_the_error_names_every_address_tried() -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]

    async def main() -> ServerCallError:
        async with HttpPool() as pool:
            with pytest.raises(ServerCallError) as caught:
                await client_for(dead, pool).post("env", "/call", {})
            return caught.value

    error = asyncio.run(main())
    assert error.unavailable and all(url + "/call" in str(error) for url in dead)


def test_the_replica_list_comes_from_the_head_server_and_follows_its_changes(
    two_replicas: tuple[list[str], Counter[str]],
) -> None:
    (a, b), served = two_replicas
    listed = {"replicas": [{"url": a}]}

    async def instances(_: Request) -> JSONResponse:
        return JSONResponse({"instances": {"env": {"server_type": "resources_servers", "impl": "x", **listed}}})

    with serve_in_thread(Starlette(routes=[Route("/instances", instances)])) as head:

        async def main() -> None:
            async with HttpPool() as pool:
                servers = ServerClient({}, pool, head_url=head, refresh_interval_s=0.0)
                for _ in range(4):
                    await servers.post("env", "/call", {})
                listed["replicas"] = [{"url": b}]  # e.g. Ray restarted the replica at a new address
                await servers.refresh()
                for _ in range(4):
                    await servers.post("env", "/call", {})

        asyncio.run(main())
    assert served == {"a": 4, "b": 4}


# ---------------------------------------------------------------------------------------------- through ng_run


def replicas_config(tmp_path: Path, upstream: str) -> Path:
    path = tmp_path / "replicas.yaml"
    path.write_text(
        "policy_model:\n  responses_api_models:\n    openai_model:\n      entrypoint: app.py\n"
        f"      base_url: {upstream}/v1\n      api_key: sk-replicas-test-0001\n      model: stub/weather-model\n"
        "      openrouter: false\n      preflight: false\n      num_replicas: 2\n"
        f"{AGENT}:\n  responses_api_agents:\n    simple_agent:\n      num_replicas: 2\n"
        "simple_weather:\n  resources_servers:\n    simple_weather:\n      num_replicas: 3\n"
    )
    return path


@pytest.mark.slow
def test_ng_run_serves_replicas_and_a_collection_through_them_stays_on_each_sessions_replica(tmp_path: Path) -> None:
    head_port = free_port()
    with serve_in_thread(FastUpstream()) as upstream:
        run = CommandProcess(
            [
                "ng_run",
                f"+config_paths=[{SIMPLE_WEATHER}, {replicas_config(tmp_path, upstream)}]",
                f"+head_server.port={head_port}",
            ],
            cwd=tmp_path,
        )
        try:
            assert run.wait_for("ng_run ready", 90), run.output
            assert {f"simple_weather[{k}]" for k in (1, 2, 3)} <= {line.split()[0] for line in run.lines if line}
            instances = httpx.get(f"http://127.0.0.1:{head_port}/instances", timeout=5).json()["instances"]
            weather = [r["url"] for r in instances["simple_weather"]["replicas"]]
            assert len(set(weather)) == 3 and len(instances[AGENT]["replicas"]) == 2

            rows, output = write_rows(tmp_path / "rows.jsonl", 90), tmp_path / "out.jsonl"
            records = collected_records(AGENT, rows, output, head_port=head_port, cwd=tmp_path, parallel=24)
            assert len(records) == 90 and all(r["error"] is None for r in records)
            # A tool call reaching a replica that does not hold its session is answered "Unknown or expired
            # session", and the verifier (on the seeding replica) would not see the call: rewards would vary.
            assert not any("nknown or expired session" in json.dumps(r["response"]) for r in records)
            by_example: dict[str, set[float]] = {}
            for record in records:
                by_example.setdefault(json.dumps(record["input"]["responses_create_params"]), set()).add(
                    record["reward"]
                )
            assert all(len(rewards) == 1 for rewards in by_example.values()), by_example
            assert sum(r["reward"] == 1.0 for r in records) >= 50
            health = [httpx.get(url + "/health", timeout=5).json() for url in weather]
            opened = [h["sessions_opened"] for h in health]
            assert sum(opened) == 90 and min(opened) >= 15, opened  # spread over all three
            assert all(h["sessions_open"] == 0 for h in health)  # every session verified and freed
            run.send(signal.SIGINT)
            assert run.wait(30) == 0
        finally:
            run.close()
