"""The merge events the transform consumes, as they arrive: an EventBridge event in an SQS body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.events import BaselinePromoted, HistoryAppended
from shared.naming import EVENT_SOURCE

CONSUMED: dict[str, type[HistoryAppended] | type[BaselinePromoted]] = {
    HistoryAppended.detail_type(): HistoryAppended,
    BaselinePromoted.detail_type(): BaselinePromoted,
}


class BusEnvelope(BaseModel):
    """The EventBridge envelope, leniently: only what the transform reads (moto's events lack
    `account` and `resources`, which Powertools' EventBridgeModel requires)."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    source: str
    detail_type: str = Field(alias="detail-type")
    detail: dict[str, Any]


class NotAnEventError(ValueError):
    """A queue message that is not an EventBridge event."""


def parse_message(body: str) -> HistoryAppended | BaselinePromoted | None:
    """The merge event in a message, or None for an event the transform does not use."""
    try:
        envelope = BusEnvelope.model_validate_json(body)
    except ValueError as exc:
        raise NotAnEventError(f"not an EventBridge event: {exc}") from None
    model = CONSUMED.get(envelope.detail_type)
    if envelope.source != EVENT_SOURCE or model is None:
        return None
    return model.model_validate(envelope.detail)
