"""The pause function's boundaries: its settings, the alarm event, its record and its event."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.environment import EnvironmentSettings

PAUSE_EVENT_SOURCE = "ingest.pause"


class PauseSettings(EnvironmentSettings):
    """Environment of the pause function (BUCKET_NAME, EVENT_BUS_NAME, SCHEDULE_RULE_NAME)."""

    bucket_name: str = Field(min_length=1)
    event_bus_name: str = Field(min_length=1)
    schedule_rule_name: str = Field(min_length=1)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AlarmState(_Lenient):
    value: str
    reason: str = ""
    timestamp: str = ""


class MetricRef(_Lenient):
    namespace: str = ""
    name: str = ""
    dimensions: dict[str, str] = Field(default_factory=dict)


class MetricStat(_Lenient):
    metric: MetricRef


class AlarmMetric(_Lenient):
    id: str = ""
    metric_stat: MetricStat | None = Field(default=None, alias="metricStat")


class AlarmConfiguration(_Lenient):
    metrics: list[AlarmMetric] = Field(default_factory=list)


class AlarmDetail(_Lenient):
    alarm_name: str = Field(alias="alarmName")
    state: AlarmState
    previous_state: AlarmState | None = Field(default=None, alias="previousState")
    configuration: AlarmConfiguration = Field(default_factory=AlarmConfiguration)

    def queue_names(self) -> list[str]:
        return [
            m.metric_stat.metric.dimensions["QueueName"]
            for m in self.configuration.metrics
            if m.metric_stat and "QueueName" in m.metric_stat.metric.dimensions
        ]


class AlarmStateChangeEvent(_Lenient):
    """EventBridge's "CloudWatch Alarm State Change" event (reference/event_shapes.md §4)."""

    id: str
    detail_type: Literal["CloudWatch Alarm State Change"] = Field(alias="detail-type")
    source: str
    time: datetime
    detail: AlarmDetail


class PauseReason(BaseModel):
    """Why ingest is paused: one entry per alarm (or operator) that asked for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cause: str  # the alarm name, or "operator"
    table: str | None
    queue_name: str | None
    at: datetime
    message: str


class PauseRecord(BaseModel):
    """`_state/pause.json`: whether ingest is paused and why."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    paused: bool
    paused_at: datetime | None = None
    resumed_at: datetime | None = None
    reasons: list[PauseReason] = Field(default_factory=list)
