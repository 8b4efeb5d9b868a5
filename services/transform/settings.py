"""The transform function's configuration, read once from its environment."""

from __future__ import annotations

from pydantic import Field

from shared.environment import EnvironmentSettings


class TransformSettings(EnvironmentSettings):
    """BUCKET_NAME, EVENT_BUS_NAME and (optional) WAREHOUSE_DSN."""

    bucket_name: str = Field(min_length=1)
    event_bus_name: str = Field(min_length=1)
    # postgresql://... of a warehouse database to upsert into as well (optional; local runs).
    warehouse_dsn: str | None = Field(default=None, repr=False)
