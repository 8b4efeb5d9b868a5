"""The merge function's configuration, read once from its environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.naming import MERGE_FUNCTION_TIMEOUT_SECONDS
from shared.tables import TABLES, UnknownTableError


class MergeSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket_name: str = Field(min_length=1)
    table_name: str = Field(min_length=1)
    event_bus_name: str = Field(min_length=1)
    dlq_url: str = Field(min_length=1)
    # Optimistic-concurrency retries of one record before it fails and SQS redelivers it.
    conflict_retries: int = 5
    # How long a batch that another invocation has started is left to it (a live twin from a
    # duplicate notification) before this one takes over (the other crashed).
    lease_seconds: float = MERGE_FUNCTION_TIMEOUT_SECONDS

    @field_validator("table_name")
    @classmethod
    def _known_table(cls, value: str) -> str:
        if value not in TABLES:
            raise ValueError(str(UnknownTableError(value)))
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MergeSettings:
        env = os.environ if env is None else env
        return cls(
            bucket_name=env.get("BUCKET_NAME", ""),
            table_name=env.get("TABLE_NAME", ""),
            event_bus_name=env.get("EVENT_BUS_NAME", ""),
            dlq_url=env.get("DLQ_URL", ""),
        )
