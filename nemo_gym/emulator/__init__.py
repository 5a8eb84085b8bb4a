"""An offline OpenRouter: the same HTTP API, scripted answers, seeded faults, zero cost.

Users dry-run an environment against it (`ng_openrouter_emulator`); tests use it to prove retries, fallbacks,
rate-limit handling and cost accounting without a network or a key.
"""

from nemo_gym.emulator.app import OpenRouterEmulator, RecordedRequest
from nemo_gym.emulator.config import FAULT_KINDS, EmulatedModel, EmulatorConfig, FaultRates, default_models

__all__ = [
    "FAULT_KINDS",
    "EmulatedModel",
    "EmulatorConfig",
    "FaultRates",
    "OpenRouterEmulator",
    "RecordedRequest",
    "default_models",
]
