"""The merge function's configuration, read once from its environment."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.deployment_facts import MERGE
from shared.environment import EnvironmentSettings
from shared.tables import TABLES, UnknownTableError


class MergeSettings(EnvironmentSettings):
    """BUCKET_NAME, TABLE_NAME, EVENT_BUS_NAME, DLQ_URL; CONFLICT_RETRIES and LEASE_SECONDS
    have defaults."""

    bucket_name: str = Field(min_length=1)
    table_name: str = Field(min_length=1)
    event_bus_name: str = Field(min_length=1)
    dlq_url: str = Field(min_length=1)
    # Optimistic-concurrency retries of one record before it fails and SQS redelivers it.
    conflict_retries: int = 5
    # How long a batch that another invocation has started is left to it (a live twin from a
    # duplicate notification) before this one takes over (the other crashed).
    lease_seconds: float = MERGE.timeout_seconds

    @field_validator("table_name")
    @classmethod
    def _known_table(cls, value: str) -> str:
        if value not in TABLES:
            raise ValueError(str(UnknownTableError(value)))
        return value
