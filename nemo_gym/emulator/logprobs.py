"""Chat Completions `logprobs` as a provider that supports them returns them through OpenRouter.

OpenRouter passes `logprobs` / `top_logprobs` to providers that support them (the model's `supported_parameters`
lists them) and silently drops them for the others, whose answers then carry `"logprobs": null`. The emulator does
the same by its catalog's `supports_logprobs`. The "tokens" are pieces of the generated text (words with their
leading space, digits, single other characters; the text is the message content, or the tool calls' arguments on a
tool-call turn) and the logprobs are deterministic numbers from a hash of the seed, model, position and piece: what
a client does with them can be tested, not what they mean. There are never token ids: OpenRouter gives none.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any

from nemo_gym.emulator.errors import EmulatorError
from nemo_gym.emulator.policy import Turn
from nemo_gym.protocol.types import JSONObject

MAX_TOP_LOGPROBS = 20
_PIECE = re.compile(r" ?[^\W\d_]+| ?\d|\s|[^\s\w]|_")


def validate(body: Mapping[str, Any]) -> None:
    """400 for the shapes OpenRouter's schema refuses: `logprobs` not a boolean, `top_logprobs` outside 0-20."""
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise EmulatorError(400, "'logprobs' must be a boolean.")
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise EmulatorError(400, f"'top_logprobs' must be an integer between 0 and {MAX_TOP_LOGPROBS}.")


def generated_text(turn: Turn) -> str:
    return turn.content if turn.content else "".join(call.arguments for call in turn.tool_calls)


def choice_logprobs(turn: Turn, body: Mapping[str, Any], *, model_id: str, seed: int) -> JSONObject | None:
    """The choice's `logprobs` for this turn, or None when the request did not ask for them."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs") or 0
    salt = zlib.crc32(f"{seed}\0{model_id}".encode())
    content = []
    for position, piece in enumerate(_PIECE.findall(generated_text(turn))):
        logprob = _logprob(salt, position, piece)
        entry = _entry(piece, logprob)
        # The chosen piece ranks first: this "model" samples greedily.
        tops = [entry, *(_entry(f"{piece}{'~' * rank}", logprob - rank * 0.75 - 0.5) for rank in range(1, top))]
        content.append({**entry, "top_logprobs": tops if top else []})
    return {"content": content, "refusal": None}


def _entry(token: str, logprob: float) -> JSONObject:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def _logprob(salt: int, position: int, piece: str) -> float:
    """In (-3, 0], from a checksum of the model, seed, position and piece (cheap: it runs per generated piece)."""
    return -3.0 * (zlib.crc32(f"{position}\0{piece}".encode(), salt) % 1_000_000) / 1_000_000
