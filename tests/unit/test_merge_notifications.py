"""The lenient S3 notification model reads real AWS, moto and future shapes alike."""

from pathlib import Path

import pytest

from services.merge.notifications import (
    NotificationError,
    S3Notification,
    S3TestEvent,
    parse_body,
)

EVENTS = Path(__file__).resolve().parents[1] / "events"


def body(name):
    return (EVENTS / name).read_text()


def test_real_aws_notification_gives_decoded_key_version_and_sequencer():
    parsed = parse_body(body("s3_notification_real.json"))
    assert isinstance(parsed, S3Notification)
    (record,) = parsed.Records
    assert (record.bucket, record.object_key) == ("my-ingest-bucket", "staging/staff.json")
    assert record.s3.object.versionId == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
    assert record.s3.object.sequencer == "0055AED6DCD90281E5"


def test_moto_notification_without_identity_fields_and_with_encoded_slash():
    # unpatched moto names no version: the shape parses, the merge then refuses it (tests:
    # test_merge_bad_messages); ops/local/moto_edge.py adds versionId and sequencer
    (record,) = parse_body(body("s3_notification_moto.json")).Records  # type: ignore[union-attr]
    assert record.object_key == "staging/staff.json"
    assert record.s3.object.versionId is None
    assert record.s3.object.eTag == "d751713988987e9331980363e24189ce"


def test_newer_event_versions_and_unknown_fields_are_accepted_and_plus_is_a_space():
    (record,) = parse_body(body("s3_notification_future.json")).Records  # type: ignore[union-attr]
    assert record.object_key == "staging/payment_type copy.json"
    assert record.eventName == "ObjectCreated:CompleteMultipartUpload"


def test_s3_test_event_is_recognised():
    assert isinstance(parse_body(body("s3_test_event.json")), S3TestEvent)


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"Event": "s3:SomethingElse"}', '{"Records": [{"eventName": "x"}]}'],
)
def test_other_bodies_are_a_clear_error(text):
    with pytest.raises(NotificationError, match="not an S3 event notification"):
        parse_body(text)
