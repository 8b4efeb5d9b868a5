"""Pause Lambda: a DLQ alarm (EventBridge "CloudWatch Alarm State Change") pauses ingest."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from services.pause.adapters import BucketPauseState, RuleSchedule, pause_publisher
from services.pause.logic import pause_ingest, reason_from_alarm
from services.pause.models import AlarmStateChangeEvent, PauseSettings
from shared.storage import BucketStore

logger = Logger(service="pause")


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = PauseSettings.from_env()
    alarm = AlarmStateChangeEvent.model_validate(event)
    reason = reason_from_alarm(alarm)
    if reason is None:
        logger.info("alarm not in ALARM: nothing to do", extra={"state": alarm.detail.state.value})
        return {"paused": False, "changed": False}
    outcome = pause_ingest(
        reason,
        state=BucketPauseState(BucketStore(settings.bucket_name)),
        schedule=RuleSchedule(settings.schedule_rule_name),
        publisher=pause_publisher(settings.event_bus_name),
        schedule_rule=settings.schedule_rule_name,
    )
    logger.info(
        "ingest paused" if outcome.changed else "ingest already paused for this alarm",
        extra={"cause": reason.cause, "table": reason.table, "changed": outcome.changed},
    )
    return {"paused": True, "changed": outcome.changed, "table": reason.table}
