"""Hostile input: bad files and bad notifications, each with its expected outcome.

Every case runs against a table that already has latest and history (a baseline and one
update merged). Outcomes:
- quarantined: the file is copied to quarantine with a report, the message goes to the DLQ;
- ignored: the record succeeds, a log line says why, nothing is written;
- rejected: the record fails with an error naming what is wrong (SQS retries it, then the DLQ);
- merged: valid if unusual input (duplicate keys, huge fields, big files) merges, checked
  against the oracle.
For every outcome but merged, latest and history must be byte-for-byte and version-for-version
what they were.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote_plus

from moto import mock_aws

from ops.local.moto_edge import aws_like_moto
from ops.sample_data import SampleDatabase
from services.merge import handler as merge_handler
from services.merge.observability import logger
from shared.commitlog import REPLAY_OF_METADATA
from shared.layout import baseline_key, quarantine_prefix, staging_key
from shared.observation import OBSERVED_METADATA, observed_at_metadata
from shared.rows import dump_rows, validate_rows
from shared.tables import TABLES
from tests.integration.merge_pipeline import BUCKET, LambdaContext, Pipeline
from tests.reliability.oracle import Comparison, compare, expect, object_versions, read_table

QUARANTINED, IGNORED, REJECTED, MERGED = "quarantined", "ignored", "rejected", "merged"
T0 = datetime(2024, 11, 14, 9, 0, 0)
# A file the ingest read before the prepared table's files were uploaded: observed first.
READ_BEFORE = observed_at_metadata(datetime(2020, 1, 1, tzinfo=UTC))


@dataclass(frozen=True)
class Case:
    name: str
    outcome: str
    # what the log (ignored), the error (rejected) or the report (quarantined) must say
    says: str
    # staged bytes (to `area`), or a notification body built from the pipeline
    data: bytes | None = None
    body: Callable[[Pipeline], str] | None = None
    table: str = "staff"
    area: str = "staging"
    # object metadata of the staged file (`observed-at`: a file the ingest wrote)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class HostileTally:
    cases: int = 0
    handled: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    rows: Comparison = field(default_factory=Comparison)
    failures: list[str] = field(default_factory=list)
    biggest_file_bytes: int = 0
    biggest_file_rows: int = 0


# ---- building inputs -----------------------------------------------------------------------


def parse_rows(data: bytes) -> list[Any]:
    rows = json.loads(data.decode("utf-8-sig"), parse_float=Decimal)
    assert isinstance(rows, list)
    return rows


def _rows(table: str, count: int, minutes: int = 30, **changes: Any) -> list[dict[str, Any]]:
    """`count` valid rows of a table as JSON-ready dicts (canonical text, then parsed)."""
    spec = TABLES[table]
    sample = SampleDatabase(3).rows(table)
    out = []
    for index in range(count):
        row = dict(sample[index % len(sample)], **changes)
        row[spec.primary_key] = index + 1
        row["last_updated"] = T0 + timedelta(minutes=minutes)
        out.append(row)
    report = validate_rows(spec, out, "hostile")
    assert report.ok, report.problems[:3]
    return parse_rows(dump_rows(spec, report.rows))


def _file(rows: list[Any]) -> bytes:
    return json.dumps(rows, default=float).encode()


def _one(table: str = "staff", **changes: Any) -> bytes:
    row = _rows(table, 1)[0]
    for column, value in changes.items():
        if value is _DROP:
            row.pop(column)
        else:
            row[column] = value
    return _file([row])


_DROP = object()


def notification(
    key: str,
    *,
    bucket: str = BUCKET,
    etag: str | None = "0" * 32,
    version: str | None = None,
    encoded: bool = False,
) -> str:
    """An S3 ObjectCreated notification body as S3 sends it (key URL-encoded)."""
    obj: dict[str, Any] = {"key": key if encoded else quote_plus(key, safe="/"), "size": 1}
    if etag:
        obj["eTag"] = etag
    if version:
        obj["versionId"] = version
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "eu-west-2",
        "eventTime": "2026-11-26T10:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": obj},
    }
    return json.dumps({"Records": [record]})


def _key_case(name: str, key: str, says: str, *, encoded: bool = False) -> Case:
    return Case(name, REJECTED, says, body=lambda _: notification(key, encoded=encoded))


def _gone_version(pipeline: Pipeline) -> str:
    """A real version of the staging key that was deleted again."""
    put = pipeline.stage(b"[]")
    pipeline.s3.delete_object(Bucket=BUCKET, Key=staging_key("staff"), VersionId=put["VersionId"])
    pipeline.receive_records()  # its own notification is left in flight
    return notification(staging_key("staff"), etag=put["ETag"], version=put["VersionId"])


def cases(quick: bool) -> list[Case]:
    big_rows = 5_000 if quick else 100_000
    big_bytes = 5 * 2**20 if quick else 50 * 2**20
    padding = 2**19  # 512 KB per row
    return [
        # ---- the file's bytes
        Case("0 bytes", IGNORED, "checked and found empty", data=b""),
        Case("whitespace only", IGNORED, "checked and found empty", data=b" \n\t \r\n"),
        Case("an empty array", IGNORED, "checked and found empty", data=b"[]"),
        Case("a BOM before valid rows", MERGED, "", data=b"\xef\xbb\xbf" + _one()),
        Case("not UTF-8", QUARANTINED, "not UTF-8", data=b'[{"first_name": "\xff\xfe"}]'),
        Case("truncated JSON", QUARANTINED, "not valid JSON", data=_one()[:-7]),
        Case("a JSON object, not an array", QUARANTINED, "got an object", data=b'{"a": 1}'),
        Case("JSON null", QUARANTINED, "got null", data=b"null"),
        Case("an array of non-objects", QUARANTINED, "must be a JSON object", data=b"[1, 2]"),
        Case("nested arrays", QUARANTINED, "must be a JSON object", data=b"[[{}], []]"),
        Case("nested too deeply", QUARANTINED, "nested too deeply", data=b"[" * 100_000),
        Case("an empty object", QUARANTINED, "required column is missing", data=b"[{}]"),
        Case(
            "a missing primary key",
            QUARANTINED,
            "required column is missing",
            data=_one(staff_id=_DROP),
        ),
        Case("a primary key of the wrong type", QUARANTINED, "staff_id", data=_one(staff_id="1")),
        Case("null in a NOT NULL column", QUARANTINED, "last_name", data=_one(last_name=None)),
        Case(
            "a bad date",
            QUARANTINED,
            "agreed_delivery_date",
            data=_one("sales_order", agreed_delivery_date="2024-02-30"),
            table="sales_order",
        ),
        Case(
            "a bad timestamp",
            QUARANTINED,
            "last_updated",
            data=_one(last_updated="2024-11-14 25:61:00"),
        ),
        Case("an extra column", QUARANTINED, "unknown column", data=_one(shoe_size=9)),
        Case(
            "a bad row among good ones",
            QUARANTINED,
            "row_index",
            data=_file([*_rows("staff", 3), {"staff_id": 9}]),
        ),
        Case("a bad baseline", QUARANTINED, "not valid JSON", data=b"[{", area="baseline"),
        Case(
            "a replay of an archive that does not exist",
            REJECTED,
            "which does not exist",
            data=_one(),
            metadata={REPLAY_OF_METADATA: "archive/staff/staff_20240101T000000000000Z_00.json"},
        ),
        Case(
            "a replay naming another table's archive",
            REJECTED,
            "not an archive of this table",
            data=_one(),
            metadata={REPLAY_OF_METADATA: "archive/payment/payment_20240101T000000000000Z_0.json"},
        ),
        Case(
            "duplicate keys in one file (newest wins)",
            MERGED,
            "",
            data=_file([*_rows("staff", 2, 40), *_rows("staff", 2, 35), *_rows("staff", 2, 50)]),
        ),
        Case(
            "a silent edit (latest's last_updated, other content): observed later, it wins",
            MERGED,
            "",
            data=_file(_rows("staff", 1, 20, first_name="Silently")),
        ),
        Case(
            "an older last_updated observed later: it wins",
            MERGED,
            "",
            data=_file(_rows("staff", 2, 5, first_name="Older")),
        ),
        Case(
            "a file the ingest read before latest's rows: history only",
            MERGED,
            "",
            data=_file(_rows("staff", 3, 45, first_name="ReadEarly")),
            metadata=READ_BEFORE,
        ),
        Case(
            "a baseline with older rows, observed later: it wins",
            MERGED,
            "",
            data=_file(_rows("staff", 4, 1, first_name="Base")),
            area="baseline",
        ),
        Case("a 1 MB string in a field", MERGED, "", data=_one(first_name="x" * 2**20)),
        Case(f"a file of {big_rows:,} rows", MERGED, "", data=_file(_rows("staff", big_rows))),
        Case(
            f"a {big_bytes // 2**20} MB file",
            MERGED,
            "",
            data=_file(_rows("staff", big_bytes // padding, first_name="p" * padding)),
        ),
        # ---- the notification's key, bucket and shape
        _key_case("keys for an unknown table", "staging/unknown.json", "unknown"),
        _key_case("a key with ../", "staging/../latest/staff.json", "staging/../latest"),
        _key_case("a key with %2F", "staging%2F..%2Flatest%2Fstaff.json", "../", encoded=True),
        _key_case("a key with spaces", "staging/st aff.json", "st aff"),
        _key_case("a key with unicode", "staging/stäff.json", "stäff"),
        _key_case("a key with a trailing slash", "staging/staff.json/", "staff.json/"),
        _key_case("staging/ alone", "staging/", "staging/"),
        _key_case("staging/a/b.json", "staging/a/b.json", "staging/a/b.json"),
        _key_case("another table's key", "staging/payment.json", "payment"),
        _key_case("a key outside staging/ and baseline/", "latest/staff.json", "latest/staff"),
        Case(
            "a record from another bucket",
            REJECTED,
            "someone-elses-bucket",
            body=lambda _: notification(staging_key("staff"), bucket="someone-elses-bucket"),
        ),
        Case(
            "s3:TestEvent",
            IGNORED,
            "ignored S3 test event",
            body=lambda _: json.dumps(
                {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}
            ),
        ),
        Case("an SQS body that is not JSON", REJECTED, "not an S3 event", body=lambda _: "hello{"),
        Case(
            "a JSON body that is not a notification",
            REJECTED,
            "not an S3 event",
            body=lambda _: '{"Records": [{"eventName": "x"}]}',
        ),
        Case(
            "an event for a version that no longer exists (its batch finished)",
            IGNORED,
            "already processed: the version is gone",
            body=_gone_version,
        ),
        Case(
            "an event for a version that never existed",
            IGNORED,
            "already processed: the version is gone",
            body=lambda _: notification(staging_key("staff"), version=uuid.uuid4().hex),
        ),
        Case(
            "an event naming no versionId",
            REJECTED,
            "names no versionId",
            body=lambda _: notification(staging_key("staff")),
        ),
        Case(
            "an event with neither versionId nor ETag",
            REJECTED,
            "names no versionId",
            body=lambda _: notification(staging_key("staff"), etag=None),
        ),
    ]


def merge_log_to(stream: Any) -> Any:
    """Send the merge's JSON log lines to `stream`; returns where they went before."""
    handler: Any = logger.logger_handler
    return handler.setStream(stream)


# ---- running a case ------------------------------------------------------------------------


class _Run:
    def __init__(self, case: Case) -> None:
        self.case = case
        self.pipeline = Pipeline(case.table)
        self.spec = self.pipeline.spec
        self.files: list[bytes] = []
        self.log = io.StringIO()

    def prepare(self) -> None:
        """A baseline and one update merged: latest and history both exist."""
        base = dump_rows(
            self.spec, validate_rows(self.spec, _rows(self.case.table, 3, 0), "b").rows
        )
        update = _file(_rows(self.case.table, 1, 20))
        self.pipeline.upload_baseline(base)
        self.pipeline.deliver()
        self.pipeline.stage(update)
        self.pipeline.deliver()
        self.files += [base, update]
        assert self.pipeline.history(), "the prepared table has history"

    def deliver(self) -> tuple[bool, str]:
        pipeline, case = self.pipeline, self.case
        if case.body is not None:
            body = case.body(pipeline)
            pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=body)
        else:
            assert case.data is not None
            key = staging_key(case.table) if case.area == "staging" else baseline_key(case.table)
            pipeline.s3.put_object(Bucket=BUCKET, Key=key, Body=case.data, Metadata=case.metadata)
            # observation order: a file the ingest read earlier comes before the prepared ones
            first = OBSERVED_METADATA in case.metadata
            self.files.insert(0 if first else len(self.files), case.data)
        messages = pipeline.receive()
        assert len(messages) == 1, f"expected one message, got {len(messages)}"
        merge_log_to(self.log)
        try:
            response = merge_handler.handler(pipeline.lambda_event(messages), LambdaContext())
            ok = not response["batchItemFailures"]
        except Exception:
            ok = False
        finally:
            merge_handler.use_service(None)
        return ok, self.log.getvalue()


def check(case: Case, tally: HostileTally) -> list[str]:
    """Run one case in a fresh moto; the problems found (none: handled as expected)."""
    with mock_aws(), aws_like_moto():
        run = _Run(case)
        run.prepare()
        s3 = run.pipeline.s3
        table = case.table
        before = {
            key: versions
            for key, versions in object_versions(s3, BUCKET).items()
            if key.startswith((f"latest/{table}", f"history/{table}"))
        }
        ok, log = run.deliver()
        after = {
            key: versions
            for key, versions in object_versions(s3, BUCKET).items()
            if key.startswith((f"latest/{table}", f"history/{table}"))
        }
        problems = []
        quarantined = [
            k for k in object_versions(s3, BUCKET) if k.startswith(quarantine_prefix(table))
        ]
        dead = run.pipeline.dlq_bodies()
        if case.outcome == MERGED:
            if not ok:
                problems.append("the record failed")
            latest, history = read_table(s3, BUCKET, table)
            rows = compare(expect(run.spec, run.files), latest, history)
            tally.rows.add(rows)
            problems += rows.details[:3]
            if case.data is not None:
                tally.biggest_file_bytes = max(tally.biggest_file_bytes, len(case.data))
                rows_in = len(parse_rows(case.data))
                tally.biggest_file_rows = max(tally.biggest_file_rows, rows_in)
        else:
            if before != after:
                problems.append("latest or history changed")
            said = log
            if case.outcome == QUARANTINED:
                reports = [k for k in quarantined if k.endswith(".report.json") or "report" in k]
                if not ok:
                    problems.append("the record failed (a quarantine is final)")
                if len(quarantined) < 2 or not reports:
                    problems.append(f"no copy and report in quarantine: {quarantined}")
                else:
                    said = s3.get_object(Bucket=BUCKET, Key=reports[0])["Body"].read().decode()
                if len(dead) != 1:
                    problems.append(f"{len(dead)} message(s) in the DLQ, expected 1")
            elif case.outcome == IGNORED:
                if not ok:
                    problems.append("the record failed")
                if quarantined or dead:
                    problems.append("something was quarantined or dead-lettered")
            elif case.outcome == REJECTED:
                if ok:
                    problems.append("the record succeeded")
                if quarantined:
                    problems.append("something was quarantined")
            if case.says not in said:
                problems.append(f"{case.outcome}, but nothing says {case.says!r}")
        return problems


def run_hostile(quick: bool) -> HostileTally:
    tally = HostileTally()
    for case in cases(quick):
        tally.cases += 1
        try:
            problems = check(case, tally)
        except Exception as exc:
            problems = [f"raised {type(exc).__name__}: {exc}"]
        if problems:
            tally.failures.append(f"{case.name}: {'; '.join(problems)}")
        else:
            tally.handled += 1
            tally.by_outcome[case.outcome] = tally.by_outcome.get(case.outcome, 0) + 1
    return tally
