"""A function's settings, read from its environment: the one place a variable is named.

Each field's variable is its name in capitals (the alias pydantic generates), so a settings
model names its variables once, by its fields. The CDK stack and the local runtime set a
function's variables through `environment(...)`, by field name: a field that does not exist
fails there, and neither side spells a variable itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict


class EnvironmentSettings(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="ignore", alias_generator=str.upper, populate_by_name=True
    )

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of `field` (KeyError: no such field)."""
        return cls.model_fields[field].alias or field.upper()

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        return tuple(cls.variable(field) for field in cls.model_fields)

    @classmethod
    def environment(cls, **values: object) -> dict[str, str]:
        """The variables that give these fields these values (None: not set)."""
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
        return {cls.variable(f): str(v) for f, v in values.items() if v is not None}

    @classmethod
    def given(cls, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The fields `env` (default: this process's) sets, by field name; empty is unset."""
        env = os.environ if env is None else env
        return {f: env[v] for f in cls.model_fields if env.get(v := cls.variable(f))}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        return cls.model_validate(cls.given(env))
