"""The transform function's configuration, read once from its environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class TransformSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket_name: str = Field(min_length=1)
    event_bus_name: str = Field(min_length=1)
    # postgresql://... of a warehouse database to upsert into as well (optional; local runs).
    warehouse_dsn: str | None = Field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TransformSettings:
        env = os.environ if env is None else env
        return cls(
            bucket_name=env.get("BUCKET_NAME", ""),
            event_bus_name=env.get("EVENT_BUS_NAME", ""),
            warehouse_dsn=env.get("WAREHOUSE_DSN") or None,
        )
