"""The merge end to end on moto: S3 notification → SQS → handler → bucket and bus."""

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.merge import handler as merge_handler
from services.merge.service import WrongTargetError
from services.merge.settings import MergeSettings
from services.merge.source import ObjectRef
from shared.commitlog import log_prefix
from shared.layout import latest_key, latest_manifest_key, staging_key
from shared.observation import OBSERVED_COLUMN, Observation, observed_at_metadata
from shared.quarantine import quarantine_record_key
from shared.rows import row_json
from shared.tables import TABLES
from tests.integration.merge_pipeline import BUCKET, Call, LambdaContext, crash
from tests.rows import staff

EVENTS = Path(__file__).resolve().parents[1] / "events"

# Before anything S3 stamps in a test run: a file the ingest read then is observed first.
READ_EARLIER = datetime(2020, 1, 1, tzinfo=UTC)
# What the merge writes and what a replay or redrive must leave alone.
MERGED = ("latest/", "history/", "archive/", "_state/log/")


def texts(rows):
    return [row_json(TABLES["staff"], r) for r in rows]


def read_earlier(minutes=0):
    """The metadata of a file the ingest read before this test's uploads were observed."""
    return observed_at_metadata(READ_EARLIER + timedelta(minutes=minutes))


def by_type(events):
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        found.setdefault(event["detail-type"], []).append(event["detail"])
    return found


def sequencer(message):
    return json.loads(message["Body"])["Records"][0]["s3"]["object"]["sequencer"]


def in_upload_order(messages):
    """Notifications in the order S3 created their objects (the per-key sequencer)."""
    return sorted(messages, key=sequencer)


def latest_raw_rows(pipeline):
    """latest's rows as stored, audit columns included (whichever layout holds them)."""
    rows = []
    for key in pipeline.keys("latest/"):
        if key != latest_manifest_key("staff"):
            rows += pipeline.raw_rows(key)
    return sorted(rows, key=lambda r: r["staff_id"])


# ---- the basic flow ---------------------------------------------------------------------


def test_baseline_is_promoted_then_staging_merges_archives_and_emits(pipeline):
    pipeline.upload_baseline([staff(1, 0), staff(2, 0)])
    assert pipeline.deliver().failed == []
    assert pipeline.latest_texts() == texts([staff(1, 0), staff(2, 0)])
    assert pipeline.baseline_versions() == []  # archived and deleted like a staging file
    assert len(pipeline.archives()) == 1

    pipeline.stage([staff(2, 20, name="Jo"), staff(3, 20)])
    assert pipeline.deliver().failed == []

    assert pipeline.latest_texts() == texts([staff(1, 0), staff(2, 20, name="Jo"), staff(3, 20)])
    (superseded,) = pipeline.history()
    assert row_json(pipeline.spec, superseded.row) == texts([staff(2, 0)])[0]
    assert superseded.superseded_at == staff(2, 20).last_updated
    assert len(pipeline.archives()) == 2
    assert pipeline.staging_versions() == []

    events = by_type(pipeline.events())
    assert set(events) == {"BaselinePromoted", "HistoryAppended", "StagingArchived"}
    appended = events["HistoryAppended"][0]
    assert appended["counts"] == {
        "inserted": 1, "updated": 1, "unchanged": 0, "late": 0, "history_rows": 1,
        "deleted": 0, "history_deleted": 0,
    }  # fmt: skip
    assert appended["keys_written"] == [2, 3]
    assert appended["event_id"] == f"HistoryAppended:staff:{appended['batch']}"
    archived = pipeline.get(events["StagingArchived"][0]["archive_key"])
    assert archived == pipeline.rows_bytes([staff(2, 20, name="Jo"), staff(3, 20)])
    # two commits: two log entries, and latest says it reflects the second
    assert len(pipeline.log_entries()) == 2
    assert pipeline.latest_metadata() == {"merge-seq": "2", "merge-batch": appended["batch"]}


def test_latest_and_history_rows_carry_their_observation_which_readers_do_not_see(pipeline):
    pipeline.upload_baseline([staff(1, 0), staff(2, 0)])
    assert pipeline.deliver().failed == []
    read_at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    pipeline.stage([staff(2, 20, name="Jo")], metadata=observed_at_metadata(read_at))
    assert pipeline.deliver().failed == []

    stored = latest_raw_rows(pipeline)
    # the baseline (a hand upload): S3's event time and sequencer; the ingest's file: its read
    assert "#" in stored[0][OBSERVED_COLUMN]
    assert stored[1][OBSERVED_COLUMN] == Observation(read_at).text == "2030-01-02T03:04:05.678000Z"
    (history_key,) = pipeline.keys("history/")
    (replaced,) = pipeline.raw_rows(history_key)
    assert replaced[OBSERVED_COLUMN] == stored[0][OBSERVED_COLUMN]  # the baseline's
    assert {"_superseded_at", "_batch"} <= set(replaced)
    # readers (shared.reader, shared.history) see the table's own columns only
    assert pipeline.latest_rows() == [staff(1, 0), staff(2, 20, name="Jo")]
    assert [h.row for h in pipeline.history()] == [staff(2, 0)]


def test_a_repeated_notification_for_a_finished_batch_changes_nothing(pipeline):
    pipeline.stage([staff(1, 0)])
    pipeline.deliver()
    pipeline.stage([staff(1, 20, name="Jo"), staff(2, 0)])
    (message,) = pipeline.receive_records()
    pipeline.invoke([message])
    before, ids = pipeline.all_object_versions(), pipeline.event_ids()
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=message["Body"])
    assert pipeline.deliver().failed == []
    # its version is gone: the batch finished (events included), nothing to do
    assert pipeline.all_object_versions() == before
    assert pipeline.event_ids() == ids


def test_empty_staging_is_checked_deleted_not_archived(pipeline):
    for data in (b"", b"  \n", b"[]", b"[]"):  # the last two share an ETag
        pipeline.stage(data)
    assert pipeline.deliver().failed == []
    assert pipeline.staging_versions() == []
    assert pipeline.archives() == []
    assert pipeline.keys("latest/") == []
    assert pipeline.log_entries() == []
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


# ---- version order: by observation ------------------------------------------------------


def test_two_versions_staged_before_either_merge_are_both_applied(pipeline):
    pipeline.stage([staff(1, 0), staff(2, 0)])
    pipeline.stage([staff(1, 20, name="Newer"), staff(3, 20)])
    messages = pipeline.receive_records()
    assert len(messages) == 2
    # the later upload's message first: the earlier upload still merges, as late rows
    assert pipeline.invoke(list(reversed(in_upload_order(messages)))).failed == []
    assert pipeline.latest_texts() == texts([staff(1, 20, name="Newer"), staff(2, 0), staff(3, 20)])
    assert list(pipeline.history_texts()) == texts([staff(1, 0)])
    assert len(pipeline.archives()) == 2
    assert pipeline.staging_versions() == []


def test_a_later_upload_wins_even_with_an_older_last_updated_and_a_silent_edit_wins(pipeline):
    pipeline.stage([staff(1, 30), staff(2, 0)])
    assert pipeline.deliver().failed == []
    # key 1 stamped older than latest's row (its transaction started first, committed last);
    # key 2 the same last_updated, other content (a silent edit): both read later, both win
    pipeline.stage([staff(1, 10, name="Committed last"), staff(2, 0, name="Edited")])
    assert pipeline.deliver().failed == []
    assert pipeline.latest_texts() == texts(
        [staff(1, 10, name="Committed last"), staff(2, 0, name="Edited")]
    )
    assert pipeline.history_texts() == Counter(texts([staff(1, 30), staff(2, 0)]))
    appended = by_type(pipeline.events())["HistoryAppended"][-1]
    assert appended["counts"] == {
        "inserted": 0, "updated": 2, "unchanged": 0, "late": 0, "history_rows": 2,
        "deleted": 0, "history_deleted": 0,
    }  # fmt: skip


def test_a_file_observed_earlier_never_changes_latest(pipeline):
    pipeline.stage([staff(1, 0, name="Now")])
    assert pipeline.deliver().failed == []
    # read by the ingest before that upload (a delayed delivery), however new its stamps
    pipeline.stage([staff(1, 90, name="Read before"), staff(2, 0)], metadata=read_earlier())
    assert pipeline.deliver().failed == []
    assert pipeline.latest_texts() == texts([staff(1, 0, name="Now"), staff(2, 0)])
    assert pipeline.history_texts() == Counter(texts([staff(1, 90, name="Read before")]))
    appended = by_type(pipeline.events())["HistoryAppended"][-1]
    assert appended["counts"] == {
        "inserted": 1, "updated": 0, "unchanged": 0, "late": 1, "history_rows": 1,
        "deleted": 0, "history_deleted": 0,
    }  # fmt: skip


def test_a_redelivered_message_after_the_key_was_overwritten_applies_its_own_version(pipeline):
    pipeline.stage([staff(1, 0)])
    first = pipeline.receive_records()
    pipeline.stage([staff(1, 30, name="Later")])
    pipeline.invoke(first)
    assert pipeline.latest_texts() == texts([staff(1, 0)])
    pipeline.deliver()
    assert pipeline.latest_texts() == texts([staff(1, 30, name="Later")])
    assert list(pipeline.history_texts()) == texts([staff(1, 0)])


@pytest.mark.parametrize("read_before", [False, True], ids=["read-after", "read-before"])
def test_a_baseline_after_latest_exists_merges_by_the_same_rules(pipeline, read_before):
    pipeline.stage([staff(1, 30, name="Newer")])
    pipeline.deliver()
    metadata = read_earlier() if read_before else None
    pipeline.upload_baseline([staff(1, 0), staff(9, 0)], metadata=metadata)
    assert pipeline.deliver().failed == []
    # key 9 only the baseline had: inserted. Key 1: the baseline's version if it was read
    # after latest's row (whatever its last_updated), else it goes to history.
    kept, superseded = (staff(1, 30, name="Newer"), staff(1, 0))
    if not read_before:
        kept, superseded = superseded, kept
    assert pipeline.latest_texts() == texts([kept, staff(9, 0)])
    assert list(pipeline.history_texts()) == texts([superseded])
    assert {"BaselinePromoted", "HistoryAppended"} <= set(by_type(pipeline.events()))
    assert pipeline.baseline_versions() == []
    assert len(pipeline.archives()) == 2


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
    service, hooks = pipeline.hooked_service()
    put = pipeline.s3.put_object(Bucket=BUCKET, Key="staging/design.json", Body=b"[]")
    ref = ObjectRef(bucket=bucket, key=key, version_id=put["VersionId"], message_body="{}")
    with pytest.raises(WrongTargetError, match=re.escape(says)):
        service.process(ref)
    assert hooks.calls == []  # refused before any request


# ---- bad input --------------------------------------------------------------------------


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
    assert len(pipeline.log_entries()) == 1  # nothing committed
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
    # the record a redrive (whose staging version is gone) finds the copy by
    record = json.loads(pipeline.get(quarantine_record_key("staff", rejected[0]["batch"])))
    assert record["quarantine_key"] == copy_key


@pytest.mark.parametrize("area", ["staging", "baseline"])
def test_not_json_is_quarantined_and_a_redrive_after_a_fix_merges_it(pipeline, area):
    upload = pipeline.stage if area == "staging" else pipeline.upload_baseline
    upload(b"[{not json")
    messages = pipeline.receive_records()
    pipeline.invoke(messages)
    (copy_key, report_key) = pipeline.quarantined()
    assert "not valid JSON" in json.loads(pipeline.get(report_key))["reason"]
    (dlq_body,) = pipeline.dlq_bodies()
    assert pipeline.staging_versions() == pipeline.baseline_versions() == []

    # a redrive while the file is still bad leaves it in quarantine
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=dlq_body)
    assert pipeline.deliver().failed == []
    assert pipeline.quarantined() == [copy_key, report_key]
    assert pipeline.log_entries() == []

    # "the schema was fixed": here, the quarantined copy is corrected in place; the redrive
    # is delivered twice (twin redrives): committed once
    pipeline.s3.put_object(Bucket=BUCKET, Key=copy_key, Body=pipeline.rows_bytes([staff(7, 0)]))
    for _ in range(2):
        pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=dlq_body)
    assert pipeline.deliver().failed == []
    assert pipeline.latest_texts() == texts([staff(7, 0)])
    assert pipeline.quarantined() == []
    assert len(pipeline.archives()) == 1
    assert len(pipeline.log_entries()) == 1
    if area == "baseline":
        assert "BaselinePromoted" in by_type(pipeline.events())


def test_a_redrive_keeps_its_original_observation_and_never_reverts_latest(pipeline):
    pipeline.stage(b"[{not json")  # rejected, observed first
    pipeline.invoke(pipeline.receive_records())
    (copy_key, _) = pipeline.quarantined()
    (dlq_body,) = pipeline.dlq_bodies()
    pipeline.stage([staff(7, 0, name="Uploaded after")])
    assert pipeline.deliver().failed == []

    # fixed and redriven after the later upload merged: it stays the earlier observation
    fixed = [staff(7, 30, name="Fixed"), staff(8, 0)]
    pipeline.s3.put_object(Bucket=BUCKET, Key=copy_key, Body=pipeline.rows_bytes(fixed))
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=dlq_body)
    assert pipeline.deliver().failed == []
    assert pipeline.latest_texts() == texts([staff(7, 0, name="Uploaded after"), staff(8, 0)])
    assert pipeline.history_texts() == Counter(texts([staff(7, 30, name="Fixed")]))


# ---- replays ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1], ids=["older-batch", "newest-batch"])
def test_a_replay_is_the_same_batch_and_changes_nothing_under_latest_history_or_archive(
    pipeline, which
):
    pipeline.stage([staff(1, 0), staff(2, 0)])
    assert pipeline.deliver().failed == []
    pipeline.stage([staff(1, 20, name="Jo"), staff(2, 0, name="Edited")])
    assert pipeline.deliver().failed == []
    before, ids = pipeline.all_object_versions(MERGED), pipeline.event_ids()
    latest = pipeline.latest_texts()

    # archive keys start with the object's stamp (to the second here): name it by its event
    archived = by_type(pipeline.events())["StagingArchived"][which]["archive_key"]
    pipeline.replay(archived)
    assert pipeline.deliver().failed == []
    assert pipeline.all_object_versions(MERGED) == before
    assert pipeline.latest_texts() == latest
    assert set(pipeline.event_ids()) == set(ids)  # its events again, with the same ids
    assert pipeline.staging_versions() == []  # the replayed file is finished too


def test_a_replay_of_an_archive_that_is_not_there_merges_nothing(pipeline):
    pipeline.stage([staff(1, 0)])
    assert pipeline.deliver().failed == []
    before = pipeline.all_object_versions(MERGED)
    pipeline.stage([staff(1, 50, name="Never")], metadata={"replay-of": "archive/staff/nope.json"})
    (message,) = pipeline.receive_records()
    assert pipeline.invoke([message]).failed == [message["MessageId"]]  # retried, then DLQ
    assert pipeline.all_object_versions(MERGED) == before


# ---- finishing --------------------------------------------------------------------------


def test_events_go_out_before_the_source_version_is_deleted(pipeline):
    pipeline.stage([staff(1, 0)])
    (message,) = pipeline.receive_records()
    service, hooks = pipeline.hooked_service()
    seen: list[set[str]] = []

    def at_the_delete(call: Call) -> None:
        seen.append({e["detail-type"] for e in pipeline.events()})
        crash(call)  # and the process dies there: the version stays

    hooks.before("DeleteObject", staging_key("staff"), at_the_delete)
    assert pipeline.invoke_with(service, [message]).failed == [message["MessageId"]]
    assert seen == [{"HistoryAppended", "StagingArchived"}]
    assert len(pipeline.staging_versions()) == 1
    ids = pipeline.event_ids()

    assert pipeline.deliver().failed == []  # redelivered: finishes, the same events again
    assert pipeline.staging_versions() == []
    assert set(pipeline.event_ids()) == set(ids)
    assert len(pipeline.log_entries()) == 1


def real_aws_message(pipeline, moto_message):
    """The real-AWS-shaped SQS event of tests/events, for the upload a moto notification
    names (its key, version, event time and sequencer)."""
    (moto_record,) = json.loads(moto_message["Body"])["Records"]
    notification = json.loads((EVENTS / "s3_notification_real.json").read_text())
    (record,) = notification["Records"]
    record["eventTime"] = moto_record["eventTime"]
    s3 = record["s3"]
    s3["bucket"]["name"] = BUCKET
    moto_object = moto_record["s3"]["object"]
    s3["object"].update(
        key=moto_object["key"],
        eTag=moto_object["eTag"],
        versionId=moto_object["versionId"],
        sequencer=moto_object["sequencer"],
    )
    event = json.loads((EVENTS / "sqs_event.json").read_text())
    event["Records"][0]["body"] = json.dumps(notification)
    return event


def test_real_aws_event_merges_the_version_it_names_and_a_repeat_changes_nothing(pipeline):
    pipeline.stage([staff(1, 0), staff(2, 0)])
    (first,) = pipeline.receive_records()
    pipeline.sqs.delete_message(QueueUrl=pipeline.queue_url, ReceiptHandle=first["ReceiptHandle"])
    pipeline.stage([staff(1, 50, name="Not this one")])
    event = real_aws_message(pipeline, first)
    assert merge_handler.handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert pipeline.latest_texts() == texts([staff(1, 0), staff(2, 0)])
    assert len(pipeline.staging_versions()) == 1  # the newer version waits for its own event
    before, ids = pipeline.all_object_versions(), pipeline.event_ids()

    # the same notification again, after its version was deleted: finished, nothing to do
    assert merge_handler.handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert pipeline.all_object_versions() == before
    assert pipeline.event_ids() == ids

    assert pipeline.deliver().failed == []  # the newer version's own notification
    assert pipeline.latest_texts() == texts([staff(1, 50, name="Not this one"), staff(2, 0)])


def test_a_version_deleted_by_someone_else_counts_as_finished_and_nothing_is_written(pipeline):
    put = pipeline.stage([staff(1, 0)])
    (message,) = pipeline.receive_records()
    pipeline.s3.delete_object(Bucket=BUCKET, Key="staging/staff.json", VersionId=put["VersionId"])
    event = real_aws_message(pipeline, message)
    assert merge_handler.handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert pipeline.keys("") == []
    assert pipeline.events() == []


# ---- concurrent merges (interleaved at the AWS call) ------------------------------------

# Where the first merge is when the second runs whole: just before it creates its log entry
# (its commit), or between that commit and its copy to latest.
PAUSES = {"before-commit": log_prefix("staff"), "before-copy": None}


def merge_with_another_running_at(pipeline, pause):
    """Deliver the first staged file; at `pause` the second runs whole. Returns the statuses
    the first merge's log-entry writes got, and the calls it made."""
    first, second = in_upload_order(pipeline.receive_records())
    other = merge_handler.build_service(pipeline.settings)
    service, hooks = pipeline.hooked_service()
    ran: list[Call] = []
    commits: list[int | None] = []

    def run_the_other(call: Call) -> None:
        ran.append(call)
        other.process(pipeline.ref(second))

    hooks.before("PutObject", PAUSES[pause] or pipeline.commit_key, run_the_other)
    hooks.after("PutObject", log_prefix("staff"), lambda c: commits.append(c.status), times=None)
    assert pipeline.invoke_with(service, [first]).failed == []
    assert len(ran) == 1
    assert pipeline.invoke([second]).failed == []  # its version is gone: finished
    return commits, hooks.calls


@pytest.mark.parametrize("pause", sorted(PAUSES))
def test_two_merges_that_leave_latest_as_it_was_keep_each_late_version_once(pipeline, pause):
    # Both files hold only versions of key 1 read before latest's: neither changes latest's
    # rows, so latest's bytes (and a one-file latest's ETag) stay the same across both
    # commits; before-copy, the first's If-Match on what it read still passes after the
    # second copied its own entry (an ABA).
    pipeline.upload_baseline([staff(1, 30)])
    pipeline.deliver()
    pipeline.stage([staff(1, 10, name="late")], metadata=read_earlier(0))
    pipeline.stage(
        [staff(1, 10, name="late"), staff(1, 0, name="later still late")],
        metadata=read_earlier(1),
    )
    _, calls = merge_with_another_running_at(pipeline, pause)

    assert pipeline.latest_texts() == texts([staff(1, 30)])
    # each late version once (a Counter: a duplicate would count 2)
    assert pipeline.history_texts() == Counter(
        texts([staff(1, 10, name="late"), staff(1, 0, name="later still late")])
    )
    # (the first commits nothing when the second's entry already holds its version)
    entries = len(pipeline.log_entries())
    assert entries == (3 if pause == "before-copy" else 2)
    assert pipeline.latest_metadata()["merge-seq"] == str(entries)  # not behind the log
    if pause == "before-copy" and pipeline.commit_key == latest_key("staff"):
        # the ABA happened: the first's If-Match passed on the bytes the second left, then
        # it copied the entry it had missed
        assert calls.count(f"PutObject {latest_key('staff')}") == 2


@pytest.mark.parametrize("pause", sorted(PAUSES))
def test_a_merge_that_changes_latest_and_one_that_does_not_keep_versions_once(pipeline, pause):
    pipeline.upload_baseline([staff(1, 30)])
    pipeline.deliver()
    pipeline.stage([staff(1, 10, name="late"), staff(2, 0)], metadata=read_earlier(0))
    pipeline.stage([staff(1, 10, name="late")], metadata=read_earlier(1))
    merge_with_another_running_at(pipeline, pause)

    assert pipeline.latest_texts() == texts([staff(1, 30), staff(2, 0)])
    assert pipeline.history_texts() == Counter(texts([staff(1, 10, name="late")]))
    assert pipeline.latest_metadata()["merge-seq"] == str(len(pipeline.log_entries()))


def test_two_merges_interleaved_one_hits_412_and_both_land(pipeline):
    pipeline.upload_baseline([staff(1, 0), staff(2, 0)])
    pipeline.deliver()
    pipeline.stage([staff(1, 20, name="A")])
    pipeline.stage([staff(2, 20, name="B"), staff(1, 10, name="A-older")])
    commits, _ = merge_with_another_running_at(pipeline, "before-commit")

    assert commits == [412, 200]  # the second took the position; the first merged again
    # the second upload is the later observation of key 1: it wins, older last_updated or not
    assert pipeline.latest_texts() == texts([staff(1, 10, name="A-older"), staff(2, 20, name="B")])
    assert pipeline.history_texts() == Counter(
        texts([staff(1, 0), staff(2, 0), staff(1, 20, name="A")])
    )
    assert len(pipeline.archives()) == 3  # the baseline's and both files'
    assert len(pipeline.log_entries()) == 3


def test_settings_come_from_the_environment_and_say_what_is_missing(monkeypatch):
    env = {"BUCKET_NAME": "b", "TABLE_NAME": "staff", "EVENT_BUS_NAME": "e", "DLQ_URL": "u"}
    assert MergeSettings.from_env(env).table_name == "staff"
    with pytest.raises(ValidationError, match="DLQ_URL"):
        MergeSettings.from_env({**env, "DLQ_URL": ""})
    with pytest.raises(ValidationError, match="unknown table 'staf'"):
        MergeSettings.from_env({**env, "TABLE_NAME": "staf"})
