"""Our own lenient model of the S3 event notification inside each SQS message body.

Powertools' `S3Model` requires fields moto leaves out (userIdentity, requestParameters,
responseElements, ownerIdentity), and real S3 adds fields over time, so we model only what the
merge uses, allow extra fields and do not pin `eventVersion`. Keys arrive URL-encoded (moto even
encodes `/` as `%2F`): `object_key` gives the decoded key.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, TypeAdapter


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class S3Bucket(_Lenient):
    name: str


class S3Object(_Lenient):
    key: str
    size: int | None = None
    eTag: str | None = None
    versionId: str | None = None
    sequencer: str | None = None


class S3Entity(_Lenient):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Lenient):
    eventName: str
    eventSource: str | None = None
    eventTime: str | None = None
    s3: S3Entity

    @property
    def bucket(self) -> str:
        return self.s3.bucket.name

    @property
    def object_key(self) -> str:
        return unquote_plus(self.s3.object.key)


class S3Notification(_Lenient):
    Records: list[S3Record]


class S3TestEvent(_Lenient):
    """What S3 (and moto) send once when a notification is configured: acknowledge, ignore."""

    Event: Literal["s3:TestEvent"]
    Service: str | None = None
    Bucket: str | None = None


_BODY = TypeAdapter(S3Notification | S3TestEvent)


class NotificationError(ValueError):
    """An SQS message body that is neither an S3 notification nor S3's test event."""


def parse_body(body: str) -> S3Notification | S3TestEvent:
    try:
        return _BODY.validate_json(body)
    except ValueError as exc:
        raise NotificationError(f"not an S3 event notification: {exc}") from None
