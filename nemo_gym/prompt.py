"""NeMo Gym's `nemo_gym.prompt` names for environments that import them (see nemo_gym.compat.prompts)."""

from nemo_gym.compat.prompts import (
    PromptConfig,
    apply_prompt_to_row,
    fill_prompt,
    load_prompt_config,
    validate_prompt_compatibility,
)

__all__ = [
    "PromptConfig",
    "apply_prompt_to_row",
    "fill_prompt",
    "load_prompt_config",
    "validate_prompt_compatibility",
]
