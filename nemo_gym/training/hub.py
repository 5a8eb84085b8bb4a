"""`+push_to_hub=org/name`: an exported file and its dataset card, as a dataset repository on the Hugging Face Hub.

What is pushed is two files: the data under `data/` and a README whose YAML header tells `datasets` (and the Hub's
viewer) where the data is, so `datasets.load_dataset("org/name")` loads it as the `train` split. A dry run writes the
same two files to a folder instead, and `datasets.load_dataset(folder)` reads that folder exactly as it would read
the repository. The token comes from the HF_TOKEN environment variable and never appears in a message.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nemo_gym.config.secrets import Redactor
from nemo_gym.extras import import_extra
from nemo_gym.protocol.types import JSONObject
from nemo_gym.training.writers import OutputFormat

TOKEN_ENV = "HF_TOKEN"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

COLUMNS: dict[str, str] = {
    "sft": "`messages` (system/user prompt, then the assistant's messages with `tool_calls` and the `tool` results), "
    "`tools` (the functions offered, chat format), and where each example came from: `row_hash`, `row_index`, "
    "`repeat_index`, `agent_name`, `fingerprint`, `reward`, `models`.",
    "dpo": "`prompt` (messages), `chosen` and `rejected` (the assistant and tool messages of two rollouts of the "
    "same row), `tools`, `chosen_reward`, `rejected_reward`, their repeat indexes and models, `row_hash`, "
    "`row_index`, `agent_name`.",
    "rl": "one row per prompt: `prompt`, `tools`, `reward_mean`, `reward_std` and `rollouts`, each with its "
    "`completion` messages, `reward`, group-normalised `advantage`, `models` and, when recorded, per-turn "
    "`turns` (`prompt_token_ids`, `generation_token_ids`, `generation_log_probs`).",
}


class HubError(Exception):
    """The push cannot be done; the message says why and how to fix it (and never holds the token)."""


@dataclass(frozen=True)
class HubFile:
    path_in_repo: str
    source: Path | bytes


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.match(repo_id) or len(repo_id) > 96:
        raise HubError(
            f"+push_to_hub={repo_id!r} is not a dataset repository id: pass +push_to_hub=<user or org>/<name>, "
            "e.g. +push_to_hub=my-org/weather-sft."
        )


def token_from_env() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise HubError(
            f"+push_to_hub needs a Hugging Face token with write access in the {TOKEN_ENV} environment variable "
            f"(create one at https://huggingface.co/settings/tokens, then export {TOKEN_ENV}=...); "
            "or pass +push_to_hub_dry_run_dir=<folder> to write what would be pushed."
        )
    return token


def data_path_in_repo(output_format: OutputFormat) -> str:
    return "data/train-00000-of-00001.parquet" if output_format == "parquet" else "data/train.jsonl"


def dataset_card(repo_id: str, format_name: str, output_format: OutputFormat, summary: JSONObject) -> str:
    """The README: the `datasets` config that points at the data, then what the columns are and where they came
    from."""
    data_path = data_path_in_repo(output_format)
    tools_note = (
        "In this Parquet file `tools` is the list of tools as JSON text (their parameter schemas differ from row to "
        "row); `json.loads` it before passing it to a chat template."
        if output_format == "parquet"
        else "`tools` is the list of tools in the chat `tools` format."
    )
    skipped = "\n".join(f"- {line}" for line in [*summary.get("skipped", []), *summary.get("dropped_explained", [])])
    return (
        "---\n"
        "configs:\n"
        "- config_name: default\n"
        "  data_files:\n"
        "  - split: train\n"
        f"    path: {data_path}\n"
        "tags:\n"
        "- nemo-gym\n"
        f"- {format_name}\n"
        "---\n\n"
        f"# {repo_id.split('/', 1)[1]}\n\n"
        f"`{format_name}` training data exported by NeMo Gym's `ng_export` from scored rollouts "
        f"({summary.get('records_read', 0)} rollouts of {summary.get('rows_read', 0)} dataset rows; "
        f"{summary.get('rows_written', 0)} rows written).\n\n"
        f"Columns: {COLUMNS[format_name]}\n\n"
        "Messages follow the OpenAI chat format: assistant `tool_calls` are "
        '`{"id", "type": "function", "function": {"name", "arguments"}}` with `arguments` as JSON text, tool '
        f'results are `{{"role": "tool", "tool_call_id", "content"}}`. {tools_note}\n\n'
        "```python\n"
        "import datasets\n\n"
        f'dataset = datasets.load_dataset("{repo_id}", split="train")\n'
        "```\n" + (f"\nLeft out of the export:\n\n{skipped}\n" if skipped else "")
    )


def hub_files(output: Path, output_format: OutputFormat, card: str) -> list[HubFile]:
    return [HubFile(data_path_in_repo(output_format), output), HubFile("README.md", card.encode())]


def write_dry_run(files: list[HubFile], directory: Path) -> list[Path]:
    """Write the files as the repository would hold them, under `directory`."""
    written = []
    for file in files:
        target = directory / file.path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(file.source, Path):
            shutil.copyfile(file.source, target)
        else:
            target.write_bytes(file.source)
        written.append(target)
    return written


def push(
    files: list[HubFile],
    repo_id: str,
    *,
    token: str,
    private: bool = True,
    endpoint: str | None = None,
    commit_message: str = "Export training data with ng_export",
) -> str:
    """Create the dataset repository if need be and commit the files in one commit; the repository's URL."""
    hub = import_extra("huggingface_hub", "train", needed_for="+push_to_hub")
    redactor = Redactor([token])
    api = hub.HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.create_commit(
            repo_id,
            repo_type="dataset",
            operations=[
                hub.CommitOperationAdd(path_in_repo=file.path_in_repo, path_or_fileobj=file.source) for file in files
            ],
            commit_message=commit_message,
        )
    except Exception as exc:  # the hub library raises HTTP, network and validation errors of many types
        raise HubError(
            f"pushing to the Hub repository {repo_id} failed: {redactor.text(str(exc))}. Check that the "
            f"{TOKEN_ENV} token can write to {repo_id.split('/')[0]} and that the Hub is reachable."
        ) from None
    return str(url)
