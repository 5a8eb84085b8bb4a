"""Checking a command's own settings (`+limit=...`): unknown names with did-you-mean, one message per problem."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import ValidationError

from nemo_gym.config.errors import ConfigError


def check_setting_names(
    given: Iterable[str], known: Iterable[str], command: str, *, close_only: bool = False, cutoff: float = 0.6
) -> None:
    """An unknown `+setting` is an error naming the close match and every setting. With `close_only`, only names
    close to a setting are errors: the command also takes config overrides (`+policy_model_name=...`)."""
    names = sorted(known)
    for key in given:
        if key in names:
            continue
        near = difflib.get_close_matches(key, names, n=1, cutoff=cutoff)
        if near or not close_only:
            raise ConfigError(
                f"Unknown setting +{key}{f' (did you mean +{near[0]}?)' if near else ''}. {command} "
                f"settings: {', '.join('+' + k for k in names)}."
            )


def settings_problems(exc: ValidationError) -> str:
    """pydantic's errors as `+key: what is wrong` for a settings model."""
    return "; ".join(f"+{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
