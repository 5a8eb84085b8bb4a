"""A GRPO-style loop over NeMo Gym rollouts: each step asks the environment for a group of rollouts per row, then
computes group advantages, which is all a policy-gradient update needs from the environment.

Offline, on the bundled model (SmolLM2-135M served by llama.cpp; needs the `local` extra). The script starts the
servers itself through the library (`launch_servers`, the same processes `ng_run` starts) and stops them at the end:

    python docs/examples/grpo_loop.py --steps 3 --rows-per-step 4 --num-repeats 4

Against servers `ng_run` already runs (an OpenRouter model, or a vLLM server holding the policy being trained):

    python docs/examples/grpo_loop.py --head-url http://127.0.0.1:11000

There is no optimiser here: the update step is marked where a trainer (NeMo RL, TRL, your own) would take each
rollout's trajectory (`record["response"]["output"]`; token ids and log-probs when the model server records them)
and its advantage. With a self-hosted policy the trainer pushes the new weights to its inference server between
steps, and the next step's rollouts come from the updated policy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from typing import Any

from nemo_gym import RolloutClient, group_records, launch_servers
from nemo_gym.config.paths import project_root

ENVIRONMENT = "simple_weather"
AGENT = f"{ENVIRONMENT}_simple_agent"
CONFIGS = [
    project_root() / "responses_api_models/local_model/configs/local_model.yaml",
    project_root() / f"resources_servers/{ENVIRONMENT}/configs/{ENVIRONMENT}.yaml",
]
DATA = project_root() / f"resources_servers/{ENVIRONMENT}/data/example.jsonl"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows-per-step", type=int, default=4)
    parser.add_argument("--num-repeats", type=int, default=4, help="rollouts per row: the group size")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the policy")
    parser.add_argument("--head-url", help="use the servers of a running ng_run instead of starting them")
    return parser.parse_args()


async def train(client: RolloutClient, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    for step in range(1, args.steps + 1):
        start = (step - 1) * args.rows_per_step
        batch = [rows[(start + i) % len(rows)] for i in range(args.rows_per_step)]
        records = [record async for record in client.rollouts(batch)]
        groups = group_records(records)  # one group per row, advantages (reward - mean) / (std + eps)

        rewards = [reward for group in groups for reward in group.rewards]
        failed = sum(len(group.failed) for group in groups)
        mean = statistics.fmean(rewards) if rewards else float("nan")
        cost = client.last_metrics["cost_usd"] if client.last_metrics else None
        print(
            f"step {step}: mean reward {mean:.3f} over {len(rewards)} rollouts ({failed} failed), "
            f"cost {'unknown' if cost is None else f'${cost:.6f}'}",
            flush=True,
        )
        for group in groups:
            row_id = batch[group.row_index].get("id", "")
            shown_rewards = ", ".join(f"{r:.2f}" for r in group.rewards)
            shown_advantages = ", ".join(f"{a:+.2f}" for a in group.advantages)
            print(f"  row {row_id}: rewards [{shown_rewards}]  advantages [{shown_advantages}]", flush=True)
        # The policy update goes here: for each group, for each rollout, weight the log-probability of the tokens
        # the policy generated (record["response"]["output"]) by group.advantages[i], then step the optimiser.


async def run(args: argparse.Namespace, **where: Any) -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    settings = {
        "agent_name": AGENT,
        "num_repeats": args.num_repeats,
        "num_samples_in_parallel": 4,
        "responses_create_params": {"temperature": args.temperature},
    }
    async with RolloutClient(**where, **settings) as client:
        await train(client, rows, args)
        print(
            f"done: {args.steps} steps, ${client.spent_usd:.6f} spent (where the model server knows prices)", flush=True
        )


def main() -> None:
    args = parse_args()
    if args.head_url:
        asyncio.run(run(args, head_url=args.head_url))
        return
    print("starting the servers (local_model + simple_weather) ...", flush=True)
    with launch_servers(CONFIGS) as config:
        asyncio.run(run(args, config=config))


if __name__ == "__main__":
    main()
