"""The merge end to end on moto: S3 notification → SQS → handler → bucket and bus."""

import json
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from pydantic import ValidationError

from services.merge import handler as merge_handler
from services.merge.service import MergeService, ObjectRef, WrongTargetError
from services.merge.settings import MergeSettings
from shared.rows import row_json
from shared.schemas import Staff
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.merge_pipeline import BUCKET, LambdaContext

EVENTS = Path(__file__).resolve().parents[1] / "events"

T0 = datetime(2024, 11, 14, 9, 0, 0)


def staff(key, minutes, name="Jeremie"):
    return Staff(
        staff_id=key,
        first_name=name,
        last_name="Franey",
        department_id=2,
        email_address=f"s{key}@terrifictotes.com",
        created_at=T0,
        last_updated=T0 + timedelta(minutes=minutes),
    )


def texts(rows):
    return [row_json(TABLES["staff"], r) for r in rows]


def by_type(events):
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        found.setdefault(event["detail-type"], []).append(event["detail"])
    return found


def test_baseline_is_promoted_then_staging_merges_archives_and_emits(pipeline):
    pipeline.upload_baseline([staff(1, 0), staff(2, 0)])
    assert pipeline.deliver().failed == []
    assert pipeline.latest_texts() == texts([staff(1, 0), staff(2, 0)])

    pipeline.stage([staff(2, 20, name="Jo"), staff(3, 20)])
    assert pipeline.deliver().failed == []

    assert pipeline.latest_texts() == texts([staff(1, 0), staff(2, 20, name="Jo"), staff(3, 20)])
    (superseded,) = pipeline.history()
    assert row_json(pipeline.spec, superseded.row) == texts([staff(2, 0)])[0]
    assert superseded.superseded_at == staff(2, 20).last_updated
    assert len(pipeline.archives()) == 1
    assert pipeline.staging_versions() == []

    events = by_type(pipeline.events())
    assert set(events) == {"BaselinePromoted", "HistoryAppended", "StagingArchived"}
    appended = events["HistoryAppended"][0]
    assert appended["counts"] == {
        "inserted": 1, "updated": 1, "unchanged": 0, "late": 0, "history_rows": 1
    }  # fmt: skip
    assert appended["keys_written"] == [2, 3]
    assert appended["event_id"] == f"HistoryAppended:staff:{appended['batch']}"
    archived = pipeline.get(events["StagingArchived"][0]["archive_key"])
    assert archived == pipeline.rows_bytes([staff(2, 20, name="Jo"), staff(3, 20)])


def test_a_notification_without_version_id_for_a_finished_batch_changes_nothing(pipeline):
    # moto's notifications name no version: once it is merged and deleted, a repeat of the
    # message is acknowledged (the versionId case re-emits: see the real-AWS event tests)
    pipeline.stage([staff(1, 0)])
    pipeline.deliver()
    pipeline.stage([staff(1, 20, name="Jo"), staff(2, 0)])
    (message,) = pipeline.receive_records()
    pipeline.invoke([message])
    before, ids = pipeline.all_object_versions(), pipeline.event_ids()
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=message["Body"])
    assert pipeline.deliver().failed == []
    assert pipeline.all_object_versions() == before
    assert pipeline.event_ids() == ids


def test_empty_staging_is_checked_deleted_not_archived(pipeline):
    for data in (b"", b"  \n", b"[]", b"[]"):  # the last two share an ETag
        pipeline.stage(data)
    assert pipeline.deliver().failed == []
    assert pipeline.staging_versions() == []
    assert pipeline.archives() == []
    assert pipeline.keys("latest/") == []
    events = pipeline.events()
    assert [e["detail-type"] for e in events] == ["StagingEmpty"] * 4
    assert len({e["detail"]["event_id"] for e in events}) == 4


def test_one_bad_record_fails_alone_in_a_partial_batch_response(pipeline):
    pipeline.stage([staff(1, 0)])
    (good,) = pipeline.receive_records()
    wrong = dict(good, MessageId="wrong-table", Body=good["Body"].replace("staff.json", "x.json"))
    event = pipeline.lambda_event([wrong, good])
    response = merge_handler.handler(event, LambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "wrong-table"}]}
    assert pipeline.latest_texts() == texts([staff(1, 0)])


def test_two_versions_staged_before_either_merge_are_both_applied(pipeline):
    pipeline.stage([staff(1, 0), staff(2, 0)])
    pipeline.stage([staff(1, 20, name="Newer"), staff(3, 20)])
    messages = pipeline.receive_records()
    assert len(messages) == 2
    # the newer version's message first: the older version still merges, as late rows
    assert pipeline.invoke(list(reversed(messages))).failed == []
    assert pipeline.latest_texts() == texts([staff(1, 20, name="Newer"), staff(2, 0), staff(3, 20)])
    assert list(pipeline.history_texts()) == texts([staff(1, 0)])
    assert len(pipeline.archives()) == 2
    assert pipeline.staging_versions() == []


def test_a_redelivered_message_after_the_key_was_overwritten_applies_its_own_version(pipeline):
    pipeline.stage([staff(1, 0)])
    first = pipeline.receive_records()
    pipeline.stage([staff(1, 30, name="Later")])
    pipeline.invoke(first)
    assert pipeline.latest_texts() == texts([staff(1, 0)])
    pipeline.deliver()
    assert pipeline.latest_texts() == texts([staff(1, 30, name="Later")])
    assert list(pipeline.history_texts()) == texts([staff(1, 0)])


def test_a_baseline_after_latest_exists_merges_by_the_same_rules(pipeline):
    pipeline.stage([staff(1, 30, name="Newer")])
    pipeline.deliver()
    pipeline.upload_baseline([staff(1, 0), staff(9, 0)])
    assert pipeline.deliver().failed == []
    # key 9 only the baseline had: inserted; key 1's older baseline version: history
    assert pipeline.latest_texts() == texts([staff(1, 30, name="Newer"), staff(9, 0)])
    assert list(pipeline.history_texts()) == texts([staff(1, 0)])
    assert {"BaselinePromoted", "HistoryAppended"} <= set(by_type(pipeline.events()))


def test_s3_test_event_is_acknowledged(pipeline):
    # configuring the notification queued an s3:TestEvent; it must not fail
    messages = pipeline.receive()
    assert any("s3:TestEvent" in m["Body"] for m in messages)
    assert pipeline.invoke(messages).failed == []


@pytest.mark.parametrize(
    ("bucket", "key", "says"),
    [
        (BUCKET, "staging/design.json", "table 'design'"),
        ("another-bucket", "staging/staff.json", "bucket 'another-bucket'"),
        (BUCKET, "latest/staff.json", "not under staging/ or baseline/"),
        (BUCKET, "staging/nosuchtable.json", "unknown table 'nosuchtable'"),
    ],
)
def test_other_tables_buckets_and_keys_are_refused_and_nothing_is_written(
    pipeline, bucket, key, says
):
    service = pipeline.faulty_service()
    pipeline.s3.put_object(Bucket=BUCKET, Key="staging/design.json", Body=b"[]")
    ref = ObjectRef(bucket=bucket, key=key, version_id=None, etag="x", message_body="{}")
    with pytest.raises(WrongTargetError, match=re.escape(says)):
        service.process(ref)
    assert service.store.writes == []


def test_bad_input_is_quarantined_with_a_report_and_sent_to_the_dlq(pipeline):
    pipeline.stage([staff(1, 0)])
    pipeline.deliver()
    latest_before = pipeline.get(pipeline.commit_key)
    bad = json.dumps(
        [
            json.loads(row_json(pipeline.spec, staff(2, 5))),
            {**json.loads(row_json(pipeline.spec, staff(3, 5))), "department_id": "two"},
            {**json.loads(row_json(pipeline.spec, staff(4, 5))), "extra": 1},
        ]
    ).encode()
    pipeline.stage(bad)
    messages = pipeline.receive_records()
    result = pipeline.invoke(messages)

    assert result.failed == []  # handled: no retries for a deterministic error
    assert pipeline.get(pipeline.commit_key) == latest_before
    assert len(pipeline.history()) == 0
    copy_key, report_key = pipeline.quarantined()
    assert pipeline.get(copy_key) == bad
    report = json.loads(pipeline.get(report_key))
    assert [(p["row_index"], p["primary_key"], p["field"]) for p in report["problems"]] == [
        (1, 3, "department_id"),
        (2, 4, "extra"),
    ]
    assert pipeline.dlq_bodies() == [messages[0]["Body"]]
    assert pipeline.staging_versions() == []
    rejected = by_type(pipeline.events())["StagingRejected"]
    assert rejected[0]["problems"] == 2
    assert rejected[0]["quarantine_key"] == copy_key


def test_not_json_is_quarantined_and_a_redrive_after_a_fix_merges_it(pipeline):
    pipeline.stage(b"[{not json")
    messages = pipeline.receive_records()
    pipeline.invoke(messages)
    (copy_key, report_key) = pipeline.quarantined()
    assert "not valid JSON" in json.loads(pipeline.get(report_key))["reason"]
    (dlq_body,) = pipeline.dlq_bodies()

    # a redrive while the file is still bad leaves it in quarantine
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=dlq_body)
    assert pipeline.deliver().failed == []
    assert pipeline.quarantined() == [copy_key, report_key]

    # "the schema was fixed": here, the quarantined copy is corrected in place
    pipeline.s3.put_object(Bucket=BUCKET, Key=copy_key, Body=pipeline.rows_bytes([staff(7, 0)]))
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=dlq_body)
    assert pipeline.deliver().failed == []
    assert pipeline.latest_texts() == texts([staff(7, 0)])
    assert pipeline.quarantined() == []
    assert len(pipeline.archives()) == 1


def merge_with_another_committing_in_between(pipeline):
    """Deliver the first staged file; once it has planned (its history not written yet), the
    second runs whole and commits: the first cannot have seen that commit's history."""
    first, second = sorted(
        pipeline.receive_records(), key=lambda m: m["Attributes"]["SentTimestamp"]
    )
    other = pipeline.faulty_service()

    class CommitsInBetween(BucketStore):
        raced = False

        def put(self, key, data, **kwargs):
            if key.startswith("history/") and not CommitsInBetween.raced:
                CommitsInBetween.raced = True
                other.process(pipeline.ref(second))
            return super().put(key, data, **kwargs)

    racing = MergeService(
        pipeline.settings, CommitsInBetween(BUCKET), other.publisher, other.dead_letters
    )
    assert pipeline.invoke_with(racing, [first]).failed == []
    assert CommitsInBetween.raced


def test_two_merges_that_leave_latest_as_it_was_keep_each_late_version_once(pipeline):
    # Both files hold only a late version of key 1: neither changes latest's bytes, so the
    # second commit's If-Match on the ETag it read still passes after the first commit.
    pipeline.upload_baseline([staff(1, 30)])
    pipeline.deliver()
    pipeline.stage([staff(1, 10, name="late")])
    pipeline.stage([staff(1, 10, name="late"), staff(1, 0, name="later still late")])
    merge_with_another_committing_in_between(pipeline)

    assert pipeline.latest_texts() == texts([staff(1, 30)])
    # each late version once (a Counter: a duplicate would count 2)
    assert pipeline.history_texts() == Counter(
        texts([staff(1, 10, name="late"), staff(1, 0, name="later still late")])
    )


def test_a_merge_that_changes_latest_after_an_unseen_same_bytes_commit_keeps_versions_once(
    pipeline,
):
    # The second file leaves latest as it was; it commits while the first (which also
    # inserts a row) is between its read and its commit: the first's If-Match still passes.
    pipeline.upload_baseline([staff(1, 30)])
    pipeline.deliver()
    pipeline.stage([staff(1, 10, name="late"), staff(2, 0)])
    pipeline.stage([staff(1, 10, name="late")])
    merge_with_another_committing_in_between(pipeline)

    assert pipeline.latest_texts() == texts([staff(1, 30), staff(2, 0)])
    assert pipeline.history_texts() == Counter(texts([staff(1, 10, name="late")]))


def test_two_commits_of_one_batch_keep_its_late_versions(pipeline):
    """A twin of this invocation (one that took the batch over) committed the same bytes for
    the same batch: the ABA guard must not count that commit as another batch's."""
    pipeline.upload_baseline([staff(1, 30)])
    pipeline.deliver()
    pipeline.stage([staff(1, 10, name="late")])

    class TwinCommits(BucketStore):
        def put(self, key, data, **kwargs):
            if key == pipeline.commit_key:
                super().put(key, data, metadata=kwargs.get("metadata"))  # the twin's commit
            return super().put(key, data, **kwargs)

    twin = pipeline.faulty_service()
    committing = MergeService(
        pipeline.settings, TwinCommits(BUCKET), twin.publisher, twin.dead_letters
    )
    assert pipeline.invoke_with(committing, pipeline.receive_records()).failed == []
    assert pipeline.history_texts() == Counter(texts([staff(1, 10, name="late")]))


def test_two_merges_interleaved_one_hits_412_and_both_land(pipeline):
    pipeline.upload_baseline([staff(1, 0), staff(2, 0)])
    pipeline.deliver()
    pipeline.stage([staff(1, 20, name="A")])
    pipeline.stage([staff(2, 20, name="B"), staff(1, 10, name="A-older")])
    first, second = sorted(
        pipeline.receive_records(), key=lambda m: m["Attributes"]["SentTimestamp"]
    )
    other = pipeline.faulty_service()

    class Interleaving(BucketStore):
        conflicts = 0

        def put(self, key, data, **kwargs):
            if key == pipeline.commit_key and not Interleaving.conflicts:
                Interleaving.conflicts += 1
                other.process(pipeline.ref(second))
            try:
                return super().put(key, data, **kwargs)
            except Exception:
                Interleaving.conflicts += 1
                raise

    racing = MergeService(
        pipeline.settings, Interleaving(BUCKET), other.publisher, other.dead_letters
    )
    assert pipeline.invoke_with(racing, [first]).failed == []

    assert Interleaving.conflicts == 2  # the hook, then the 412
    assert pipeline.latest_texts() == texts([staff(1, 20, name="A"), staff(2, 20, name="B")])
    assert set(pipeline.history_texts()) == set(
        texts([staff(1, 0), staff(2, 0), staff(1, 10, name="A-older")])
    )
    assert max(pipeline.history_texts().values()) == 1
    assert len(pipeline.archives()) == 2


def real_aws_message(pipeline, put, key="staging/staff.json"):
    """The real-AWS-shaped SQS event of tests/events, naming an object moto holds."""
    notification = json.loads((EVENTS / "s3_notification_real.json").read_text())
    s3 = notification["Records"][0]["s3"]
    s3["bucket"]["name"] = BUCKET
    s3["object"].update(key=key, eTag=put["ETag"].strip('"'), versionId=put["VersionId"])
    event = json.loads((EVENTS / "sqs_event.json").read_text())
    event["Records"][0]["body"] = json.dumps(notification)
    return event


def test_real_aws_event_with_version_id_merges_that_version_and_replays_cleanly(pipeline):
    put = pipeline.stage([staff(1, 0), staff(2, 0)])
    pipeline.stage([staff(1, 50, name="Not this one")])
    event = real_aws_message(pipeline, put)
    assert merge_handler.handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert pipeline.latest_texts() == texts([staff(1, 0), staff(2, 0)])
    assert len(pipeline.staging_versions()) == 1  # the newer version waits for its own event
    before, ids = pipeline.all_object_versions(), pipeline.event_ids()

    # the same notification again, after its version was deleted: finish, change nothing
    assert merge_handler.handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert pipeline.all_object_versions() == before
    again = pipeline.event_ids() - ids
    assert sorted(i.split(":")[0] for i in again) == ["HistoryAppended", "StagingArchived"]
    assert set(again) <= set(ids)


def test_an_unknown_gone_version_fails_the_record_with_a_clear_error(pipeline, caplog):
    put = pipeline.stage([staff(1, 0)])
    pipeline.s3.delete_object(Bucket=BUCKET, Key="staging/staff.json", VersionId=put["VersionId"])
    event = real_aws_message(pipeline, put)
    with pytest.raises(BatchProcessingError):  # every record failed: Lambda retries the batch
        merge_handler.handler(event, LambdaContext())
    assert pipeline.keys("") == []


def test_settings_come_from_the_environment_and_say_what_is_missing(monkeypatch):
    env = {"BUCKET_NAME": "b", "TABLE_NAME": "staff", "EVENT_BUS_NAME": "e", "DLQ_URL": "u"}
    assert MergeSettings.from_env(env).table_name == "staff"
    with pytest.raises(ValidationError, match="dlq_url"):
        MergeSettings.from_env({**env, "DLQ_URL": ""})
    with pytest.raises(ValidationError, match="unknown table 'staf'"):
        MergeSettings.from_env({**env, "TABLE_NAME": "staf"})
