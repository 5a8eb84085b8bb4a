"""Checking a command's own settings (`+limit=...`): unknown names with did-you-mean, one message per problem."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

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


SettingsT = TypeVar("SettingsT", bound=BaseModel)


def validated_settings(
    model: type[SettingsT], overrides: Mapping[str, Any], command: str, hints: Mapping[str, str]
) -> SettingsT:
    """A command's settings from its `+key=value` overrides, or one ConfigError naming every problem with what to
    pass instead (`hints`: setting -> an example of a good value)."""
    check_setting_names(overrides, model.model_fields, command)
    try:
        return model.model_validate(overrides)
    except ValidationError as exc:
        raise ConfigError(hinted_problems(exc, hints)) from None


def hinted_problems(exc: ValidationError, hints: Mapping[str, str]) -> str:
    """pydantic's errors as `+key=value is not valid: pass <hint>`, a missing one as `+key is required`, and a rule
    across settings (a model validator's ValueError) as its own message."""
    problems = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "missing":
            problems.append(f"+{key} is required: pass {hints.get(key, key)}")
        elif not key:
            problems.append(str(error["msg"]).removeprefix("Value error, "))
        else:
            problems.append(f"+{key}={error.get('input')!r} is not valid: pass {hints.get(key, error['msg'])}")
    return "; ".join(problems) + "."
