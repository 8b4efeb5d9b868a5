"""`ingestctl` operator commands on moto, in-process: the local runtime's resources
(`create_resources`), the merge handler called by the test as the dispatcher would, the pause
handler called with a real-shaped alarm event once a DLQ holds a message."""

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from ops.cli import app
from ops.dismissal import quarantined_records
from ops.sample_data import SampleDatabase
from services.ingest.log_ingest import SLOT_HEALTH_KEY
from services.merge import handler as merge_handler
from services.merge.settings import MergeSettings
from services.pause.handler import handler as pause_handler
from shared import naming, schemas
from shared.commitlog import REPLAY_OF_METADATA, LogEntry, entry_key, log_prefix
from shared.layout import (
    archive_prefix,
    baseline_key,
    batch_id,
    history_prefix,
    latest_key,
    quarantine_prefix,
    staging_key,
)
from shared.observation import observed_at_metadata
from shared.reader import read_latest
from shared.rows import dump_rows, load_rows, row_json, validate_rows
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.aws import local_resources

FIXTURES = Path(__file__).parent.parent / "fixtures"
BUCKET = "ingest-ops-test"
TABLE = "staff"
SPEC = TABLES[TABLE]
PK = SPEC.primary_key
T0 = datetime(2024, 11, 4, 9, 0)
READ = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # when the ingest read a file (`observed-at`)


@pytest.fixture
def deployed(aws, monkeypatch):
    monkeypatch.setenv("BUCKET_NAME", BUCKET)
    monkeypatch.setenv("EVENT_BUS_NAME", naming.event_bus_name())
    monkeypatch.setenv("SCHEDULE_RULE_NAME", naming.ingest_schedule_rule_name())
    clients, deployment = local_resources(BUCKET, [TABLE])
    settings = MergeSettings(
        bucket_name=BUCKET,
        table_name=TABLE,
        event_bus_name=deployment.event_bus,
        dlq_url=deployment.tables[TABLE].dlq.url,
    )
    merge_handler.use_service(merge_handler.build_service(settings))
    return SimpleNamespace(clients=clients, deployment=deployment, table=deployment.tables[TABLE])


def _context(name):
    return SimpleNamespace(
        function_name=name,
        memory_limit_in_mb=256,
        invoked_function_arn=f"arn:aws:lambda:eu-west-2:123456789012:function:{name}",
        aws_request_id="req-1",
    )


def deliver(env, rounds=5):
    """Play the SQS event source mapping for the table's queue until it is empty."""
    sqs, queue = env.clients.sqs, env.table.queue
    for _ in range(rounds):
        messages = sqs.receive_message(
            QueueUrl=queue.url, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue.arn,
                "awsRegion": "eu-west-2",
            }
            for m in messages
        ]
        response = merge_handler.handler({"Records": records}, _context("ingest-merge-staff"))
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        assert not failed, "the merge failed a message"
        for m in messages:
            sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=m["ReceiptHandle"])
    raise AssertionError("the queue did not drain")


def play_alarm_if_dlq_holds_messages(env):
    """What the DLQ alarm and its EventBridge rule do: invoke pause with the alarm event."""
    depth = env.clients.sqs.get_queue_attributes(
        QueueUrl=env.table.dlq.url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    if int(depth):
        event = json.loads((FIXTURES / "alarm_state_change.json").read_text())
        pause_handler(event, _context("ingest-pause"))
    return int(depth)


def cli(*args):
    result = CliRunner().invoke(app, ["--bucket", BUCKET, *args])
    return result


def status(env):
    result = cli("status", "--json", "--table", TABLE)
    return result.exit_code, json.loads(result.stdout)


def staff_rows():
    return validate_rows(SPEC, SampleDatabase(7).rows(TABLE), "sample").rows


def put(env, key, data, metadata=None):
    return env.clients.s3.put_object(Bucket=BUCKET, Key=key, Body=data, Metadata=metadata or {})


def get(env, key):
    return env.clients.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def keys(env, prefix):
    listed = env.clients.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def quarantined_copies(env):
    return [k for k in keys(env, quarantine_prefix(TABLE)) if not k.endswith(".report.json")]


def operator_events(env):
    found = []
    while messages := env.clients.sqs.receive_message(
        QueueUrl=env.deployment.consumers["operator"].url, MaxNumberOfMessages=10
    ).get("Messages", []):
        for m in messages:
            found.append(json.loads(m["Body"]))
            env.clients.sqs.delete_message(
                QueueUrl=env.deployment.consumers["operator"].url, ReceiptHandle=m["ReceiptHandle"]
            )
    return found


def store(env):
    return BucketStore(BUCKET, env.clients.s3)


def peek_dlq(env):
    """The body of the table's (one) DLQ message, left in the DLQ."""
    sqs, url = env.clients.sqs, env.table.dlq.url
    (message,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    return message["Body"]


def latest_rows(env, spec=SPEC):
    """latest's rows as every reader sees them (audit columns such as `_observed` stripped)."""
    return read_latest(store(env), spec).rows


def latest_texts(env):
    return sorted(row_json(SPEC, r) for r in latest_rows(env))


def bad_staging(rows):
    raw = json.loads(dump_rows(SPEC, rows))
    raw[1]["email_address"] = 42
    return json.dumps(raw).encode()


def test_bad_file_pauses_then_fix_redrive_resume_loses_and_duplicates_nothing(deployed):
    env = deployed
    base = staff_rows()
    put(env, "baseline/staff.json", dump_rows(SPEC, base))
    deliver(env)
    assert play_alarm_if_dlq_holds_messages(env) == 0
    operator_events(env)
    changed = [r.model_copy(update={"last_updated": T0 + timedelta(days=400)}) for r in base[:2]]
    changed = [changed[0].model_copy(update={"first_name": "Renamed"}), changed[1]]

    put(env, staging_key(TABLE), bad_staging(changed))
    deliver(env)

    (copy,) = quarantined_copies(env)
    assert play_alarm_if_dlq_holds_messages(env) == 1
    rule = env.clients.events.describe_rule(Name=naming.ingest_schedule_rule_name())
    assert rule["State"] == "DISABLED"
    paused = [e for e in operator_events(env) if e["detail-type"] == "IngestPaused"]
    assert [e["detail"]["table"] for e in paused] == [TABLE]
    code, report = status(env)
    assert code == 3
    assert report["paused"] is True
    assert naming.dlq_alarm_name(TABLE) in report["pause_reason"]
    table = report["tables"][TABLE]
    assert (table["dlq_messages"], table["quarantined"], table["latest_rows"]) == (1, 1, len(base))
    assert "email_address" in table["quarantine"][0]["first_error"]
    refused = cli("resume", "--table", TABLE)
    assert refused.exit_code == 1
    assert "staff (1)" in refused.output  # the DLQ still holds the message
    assert rule["State"] == "DISABLED"

    # The DLQ message names the batch; its quarantine record says where the copy is.
    body = peek_dlq(env)
    (record,) = quarantined_records(store(env), TABLE, body)
    assert (record.quarantine_key, record.batch) == (copy, table["quarantine"][0]["batch"])

    # The fix: a good version of the file in place of the quarantined copy, then redrive.
    put(env, copy, dump_rows(SPEC, changed))
    redriven = cli("redrive", "--table", TABLE)
    assert redriven.exit_code == 0, redriven.output
    assert "moved 1 message" in redriven.stdout
    deliver(env)
    assert play_alarm_if_dlq_holds_messages(env) == 0
    resumed = cli("resume", "--table", TABLE)
    assert resumed.exit_code == 0, resumed.output
    rule = env.clients.events.describe_rule(Name=naming.ingest_schedule_rule_name())
    assert rule["State"] == "ENABLED"

    code, report = status(env)
    assert code == 0
    assert report["paused"] is False
    table = report["tables"][TABLE]
    assert (table["dlq_messages"], table["quarantined"], table["staging_pending"]) == (0, 0, 0)
    assert quarantined_copies(env) == []
    assert quarantined_records(store(env), TABLE, body) == []  # merged: out of quarantine
    expected = {r.staff_id: r for r in base} | {r.staff_id: r for r in changed}
    assert latest_texts(env) == sorted(row_json(SPEC, r) for r in expected.values())
    # History holds exactly the two superseded baseline rows, once each.
    assert (table["history_objects"], table["history_rows"]) == (1, 2)
    assert table["last_merge"]["status"] == "committed"  # latest names it


class StaffWithNickname(schemas.Staff):
    nickname: str | None = None


def test_schema_drift_quarantined_then_merged_by_redrive_once_the_schema_knows_the_column(
    deployed, monkeypatch
):
    env = deployed
    base = staff_rows()
    put(env, "baseline/staff.json", dump_rows(SPEC, base))
    deliver(env)
    raw = json.loads(dump_rows(SPEC, base[:1]))
    raw[0] |= {"nickname": "Jo", "last_updated": "2025-12-09 10:00:00.000000"}
    put(env, staging_key(TABLE), json.dumps(raw).encode())
    deliver(env)
    assert len(quarantined_copies(env)) == 1
    report = status(env)[1]["tables"][TABLE]
    assert report["dlq_messages"] == 1
    assert "nickname" in report["quarantine"][0]["first_error"]

    # The table learns the column (the registry the merge reads, in this process).
    learnt = dataclasses.replace(SPEC, row_model=StaffWithNickname)
    monkeypatch.setitem(TABLES, TABLE, learnt)
    assert cli("redrive", "--table", TABLE).exit_code == 0
    deliver(env)

    assert quarantined_copies(env) == []
    merged = latest_rows(env, learnt)
    (jo,) = [r for r in merged if getattr(r, PK) == getattr(base[0], PK)]
    assert jo.model_dump()["nickname"] == "Jo"
    assert len(merged) == len(base)
    assert status(env)[1]["tables"][TABLE]["dlq_messages"] == 0


def test_under_add_nullable_status_names_the_added_column_and_history_shows_it(
    deployed, monkeypatch
):
    env = deployed
    base = staff_rows()
    put(env, "baseline/staff.json", dump_rows(SPEC, base))
    deliver(env)
    monkeypatch.setitem(TABLES, TABLE, dataclasses.replace(SPEC, schema_policy="add_nullable"))
    raw = json.loads(dump_rows(SPEC, base[:1]))
    raw[0] |= {"nickname": "Jo", "last_updated": "2025-12-09 10:00:00.000000"}
    put(env, staging_key(TABLE), json.dumps(raw).encode())
    deliver(env)

    _, report = status(env)
    table = report["tables"][TABLE]
    assert (table["added_columns"], table["quarantined"], table["dlq_messages"]) == (
        ["nickname"],
        0,
        0,
    )
    key = getattr(base[0], PK)
    shown = cli("history", TABLE, str(key), "--json")
    assert shown.exit_code == 0, shown.output
    assert [v["row"]["nickname"] for v in json.loads(shown.stdout)] == [None, "Jo"]


def test_dismiss_keeps_the_evidence_records_why_and_empties_the_dlq(deployed):
    env = deployed
    base = staff_rows()
    put(env, "baseline/staff.json", dump_rows(SPEC, base))
    deliver(env)
    changed = [r.model_copy(update={"last_updated": T0 + timedelta(days=400)}) for r in base[:2]]
    put(env, staging_key(TABLE), bad_staging(changed))
    deliver(env)
    (copy,) = quarantined_copies(env)
    put(env, staging_key(TABLE), dump_rows(SPEC, changed))  # the corrected file, staged
    deliver(env)
    batch = status(env)[1]["tables"][TABLE]["quarantine"][0]["batch"]

    wrong = cli("dismiss", "--table", TABLE, "--batch", "not-a-batch")
    assert wrong.exit_code == 1  # nothing matched: said so, nothing removed
    assert status(env)[1]["tables"][TABLE]["dlq_messages"] == 1
    result = cli("dismiss", "--table", TABLE, "--reason", "corrected file staged", "--by", "ana")
    assert result.exit_code == 0, result.output

    code, report = status(env)
    assert code == 0  # (no alarm played here) nothing left in the DLQ: healthy
    table = report["tables"][TABLE]
    assert (table["dlq_messages"], table["quarantined"]) == (0, 0)
    assert table["quarantine"][0]["dismissed"] is True
    assert quarantined_copies(env) == [copy]  # kept as evidence
    record = json.loads(get(env, f"_state/dismissed/{TABLE}/{batch}.json"))
    assert (record["dismissed_by"], record["reason"]) == ("ana", "corrected file staged")
    assert record["quarantine_key"] == copy


def test_history_and_asof_agree_with_the_versions_that_were_staged(deployed, tmp_path):
    env = deployed
    base = staff_rows()
    # Each file says when the ingest read it (`observed-at`), an hour apart: that is the order.
    read = [READ + timedelta(hours=h) for h in range(5)]
    staged = [(read[0], base)]
    put(env, "baseline/staff.json", dump_rows(SPEC, base), observed_at_metadata(read[0]))
    deliver(env)
    key = getattr(base[0], PK)
    # Four later versions of the first rows; the last one is stamped older than the one
    # before it (a transaction that wrote first and committed last), yet observed later.
    edits = [(1, 300, "A"), (2, 200, "B"), (3, 500, "C"), (4, 400, "late")]
    for (n, day, name), read_at in zip(edits, read[1:], strict=True):
        rows = [
            r.model_copy(
                update={"first_name": f"{name}{i}", "last_updated": T0 + timedelta(days=day)}
            )
            for i, r in enumerate(base[: n + 1])
        ]
        staged.append((read_at, rows))
        put(env, staging_key(TABLE), dump_rows(SPEC, rows), observed_at_metadata(read_at))
        deliver(env)

    # Independent reconstruction: every staged version, per key, in the order it was read.
    versions: dict[int, list[tuple[datetime, str]]] = {}
    for read_at, rows in staged:
        for r in rows:
            versions.setdefault(getattr(r, PK), []).append((read_at, row_json(SPEC, r)))
    timeline = versions[key]

    shown = cli("history", TABLE, str(key), "--json")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert [v["row"] for v in document] == [json.loads(text) for _, text in timeline]
    assert len(document) == 5  # the baseline row and its four staged versions
    valid_from = [datetime.fromisoformat(v["valid_from"]) for v in document]
    assert valid_from == [t.replace(tzinfo=None) for t, _ in timeline]  # UTC
    assert document[-1]["valid_to"] is None
    (current,) = [r for r in latest_rows(env) if getattr(r, PK) == key]
    assert document[-1]["row"] == json.loads(row_json(SPEC, current))  # latest's: "late0"

    for at in [read[0] - timedelta(minutes=1), *(t + timedelta(minutes=30) for t in read)]:
        expected = []
        for k in sorted(versions):
            current = [text for t, text in versions[k] if t <= at]
            if current:
                expected.append(current[-1])
        out = tmp_path / f"asof-{at:%H%M}.json"
        naive = at.replace(tzinfo=None).isoformat()
        result = cli("asof", TABLE, "--at", naive, "--out", str(out))
        assert result.exit_code == 0, result.output
        got = [row_json(SPEC, r) for r in load_rows(SPEC, out.read_bytes(), str(out)).rows]
        assert got == expected, at


def test_a_redrive_of_still_bad_data_leaves_it_quarantined_until_dismissed(deployed):
    env = deployed
    base = staff_rows()
    put(env, "baseline/staff.json", dump_rows(SPEC, base))
    deliver(env)
    changed = [r.model_copy(update={"last_updated": T0 + timedelta(days=400)}) for r in base[:2]]
    put(env, staging_key(TABLE), bad_staging(changed))
    deliver(env)
    assert cli("redrive", "--table", TABLE).exit_code == 0
    deliver(env)  # validated again from quarantine: still bad, stays there; message consumed

    code, report = status(env)
    table = report["tables"][TABLE]
    assert (table["dlq_messages"], table["quarantined"]) == (0, 1)
    assert code == 3  # unresolved bad data, though no DLQ message is left
    batch = table["quarantine"][0]["batch"]
    put(env, staging_key(TABLE), dump_rows(SPEC, changed))
    deliver(env)

    result = cli("dismiss", "--table", TABLE, "--batch", batch, "--by", "ana")
    assert result.exit_code == 0, result.output
    assert f"dismissed batch {batch}" in result.stdout
    record = json.loads(get(env, f"_state/dismissed/{TABLE}/{batch}.json"))
    assert record["message_id"] is None
    assert status(env)[0] == 0
    assert latest_texts(env) == sorted(
        row_json(SPEC, r)
        for r in ({r.staff_id: r for r in base} | {r.staff_id: r for r in changed}).values()
    )


def renamed(rows, days=400):
    when = T0 + timedelta(days=days)
    return [r.model_copy(update={"first_name": "Renamed", "last_updated": when}) for r in rows]


def test_status_reads_the_log_entry_latest_reflects_and_counts_waiting_baselines(deployed):
    env = deployed
    base = staff_rows()
    put(env, baseline_key(TABLE), dump_rows(SPEC, base))
    table = status(env)[1]["tables"][TABLE]
    assert (table["staging_pending"], table["last_merge"]) == (1, None)  # the baseline waits
    deliver(env)
    staged = put(env, staging_key(TABLE), dump_rows(SPEC, renamed(base[:2])))
    deliver(env)

    table = status(env)[1]["tables"][TABLE]
    entry = LogEntry.model_validate_json(get(env, entry_key(TABLE, 2)))
    assert table["staging_pending"] == 0  # the baseline was archived and deleted like staging
    assert table["last_batch"] == entry.batch == batch_id(staged["VersionId"], None)
    last = table["last_merge"]
    assert (last["status"], last["source_key"], last["rows"]) == (
        "committed",
        staging_key(TABLE),
        2,
    )
    assert last["counts"] == entry.counts.model_dump(mode="json")
    assert datetime.fromisoformat(last["batch_time"]) == entry.source.last_modified


def test_replay_of_an_archived_batch_is_the_same_batch_again(deployed):
    env = deployed
    base = staff_rows()
    put(env, baseline_key(TABLE), dump_rows(SPEC, base))
    deliver(env)
    staged = put(env, staging_key(TABLE), dump_rows(SPEC, renamed(base[:2])))
    deliver(env)
    batch = batch_id(staged["VersionId"], None)
    (archive,) = [k for k in keys(env, archive_prefix(TABLE)) if batch in k]
    before = {k: get(env, k) for k in [latest_key(TABLE), *keys(env, history_prefix(TABLE))]}
    archives, entries = keys(env, archive_prefix(TABLE)), keys(env, log_prefix(TABLE))
    merged_ids = {e["detail"]["event_id"] for e in operator_events(env)}

    done = cli("replay", "--table", TABLE, "--archive", archive)
    assert done.exit_code == 0, done.output
    (waiting,) = env.clients.s3.list_object_versions(Bucket=BUCKET, Prefix=staging_key(TABLE))[
        "Versions"
    ]
    head = env.clients.s3.head_object(
        Bucket=BUCKET, Key=staging_key(TABLE), VersionId=waiting["VersionId"]
    )
    assert head["Metadata"] == {REPLAY_OF_METADATA: archive}
    deliver(env)

    # No new archive, entry or history object, latest untouched, the batch's events again.
    assert (keys(env, archive_prefix(TABLE)), keys(env, log_prefix(TABLE))) == (archives, entries)
    assert {k: get(env, k) for k in [latest_key(TABLE), *keys(env, history_prefix(TABLE))]} == (
        before
    )
    replayed_ids = {e["detail"]["event_id"] for e in operator_events(env)}
    assert replayed_ids
    assert replayed_ids <= merged_ids
    assert all(batch in event_id for event_id in replayed_ids)
    assert status(env)[1]["tables"][TABLE]["staging_pending"] == 0

    # A baseline's archive goes back to baseline/: the same batch, so the same events again.
    (base_archive,) = [k for k in archives if k != archive]
    done = cli("replay", "--table", TABLE, "--archive", base_archive)
    assert done.exit_code == 0, done.output
    assert f"as {baseline_key(TABLE)}" in done.stdout
    deliver(env)
    assert {k: get(env, k) for k in [latest_key(TABLE), *keys(env, history_prefix(TABLE))]} == (
        before
    )
    assert (keys(env, archive_prefix(TABLE)), keys(env, log_prefix(TABLE))) == (archives, entries)
    replayed_ids = {e["detail"]["event_id"] for e in operator_events(env)}
    assert replayed_ids
    assert replayed_ids <= merged_ids
    assert all(event_id.startswith("BaselinePromoted:") for event_id in replayed_ids)
    assert status(env)[1]["tables"][TABLE]["staging_pending"] == 0
    assert cli("replay", "--table", TABLE, "--archive", "archive/other/x.json").exit_code == 2


def test_pause_by_hand_is_idempotent_and_status_says_why(deployed):
    env = deployed
    first = cli("pause", "--reason", "database maintenance")
    again = cli("pause", "--reason", "database maintenance")

    assert (first.exit_code, again.exit_code) == (0, 0)
    assert "already paused" in again.stdout
    code, report = status(env)
    assert code == 3
    assert report["paused"] is True
    assert report["pause_reason"] == "operator: database maintenance"
    assert report["schedule_enabled"] is False
    assert cli("resume", "--table", TABLE).exit_code == 0
    assert status(env)[0] == 0


def test_exit_codes_for_usage_and_failure(deployed):
    assert cli("history", "no_such_table", "1").exit_code == 2
    assert cli("status", "--table", "no_such_table").exit_code == 2
    missing = CliRunner().invoke(app, ["--bucket", "no-such-bucket", "status", "--table", TABLE])
    assert missing.exit_code == 1
    assert "NoSuchBucket" in missing.output
    assert cli("history", TABLE, "999").exit_code == 1  # no such row


def _slot(wal_status: str, lag: int) -> bytes:
    return json.dumps(
        {
            "slot": "ingest_changes",
            "plugin": "wal2json",
            "database": "totesys",
            "active": False,
            "wal_status": wal_status,
            "restart_lsn": "0/16B3748",
            "confirmed_flush_lsn": "0/16B3748",
            "current_lsn": "0/26B3748",
            "lag_bytes": lag,
            "retained_bytes": lag,
            "safe_wal_size": None,
        }
    ).encode()


def test_status_shows_the_replication_slot_and_a_slot_at_risk_is_not_healthy(deployed):
    env = deployed
    put(env, SLOT_HEALTH_KEY, _slot("reserved", 4096))
    code, report = status(env)
    assert report["replication_slot"]["lag_bytes"] == 4096
    assert code == 0
    shown = cli("status", "--table", TABLE)
    assert "ingest_changes" in shown.output
    put(env, SLOT_HEALTH_KEY, _slot("lost", 1 << 30))
    code, report = status(env)
    assert code == 3
    assert "lost" in cli("status", "--table", TABLE).output
