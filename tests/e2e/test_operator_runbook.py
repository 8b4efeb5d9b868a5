"""The operator runbook against `ingestctl local up`: every command a subprocess, as a person
or a script would run them; the dispatcher plays the DLQ alarm and invokes pause itself."""

import json
import subprocess
from datetime import timedelta

import pytest

from ops.sample_data import SampleDatabase
from shared import naming
from shared.layout import baseline_key, quarantine_prefix, staging_key
from shared.reader import read_latest
from shared.rows import dump_rows, row_json, validate_rows
from shared.storage import BucketStore
from shared.tables import get_table
from tests.e2e.local_up import INGESTCTL, ROOT, LocalUp
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
SPEC = get_table("staff")


@pytest.fixture
def up(tmp_path):
    runtime = LocalUp(tmp_path / "logs", "--tables", "staff")
    runtime.wait_line(r"^ready ", timeout=30)
    yield runtime
    runtime.stop()


def ingestctl(up, *args):
    return subprocess.run(
        [INGESTCTL, "--endpoint-url", up.endpoint, "--bucket", "ingest-local", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def status(up):
    done = ingestctl(up, "status", "--json", "--table", "staff")
    return done.returncode, json.loads(done.stdout)


def test_bad_file_alarm_pause_then_fix_redrive_resume(up):
    s3 = up.client("s3")
    rows = validate_rows(SPEC, SampleDatabase(3).rows("staff"), "sample").rows
    s3.put_object(Bucket="ingest-local", Key=baseline_key("staff"), Body=dump_rows(SPEC, rows))
    up.wait_line(r"^merge table=staff key=baseline/staff.json .* ok$", timeout=15)
    bad = json.loads(dump_rows(SPEC, rows[:1]))  # a row the source should never have sent
    bad[0]["first_name"] = None
    s3.put_object(Bucket="ingest-local", Key=staging_key("staff"), Body=json.dumps(bad).encode())

    up.wait_line(r"^alarm table=staff .*state=ALARM .*pause=ok", timeout=30)
    code, report = status(up)
    assert code == 3
    assert report["paused"] is True
    assert naming.dlq_alarm_name("staff") in report["pause_reason"]
    table = report["tables"]["staff"]
    assert (table["dlq_messages"], table["quarantined"]) == (1, 1)
    assert "first_name" in table["quarantine"][0]["first_error"]
    refused = ingestctl(up, "resume", "--table", "staff")
    assert refused.returncode == 1
    assert "staff (1)" in refused.stderr

    # Fix the quarantined copy in place, redrive, and the merge takes the fixed copy.
    (copy,) = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket="ingest-local", Prefix=quarantine_prefix("staff"))[
            "Contents"
        ]
        if not o["Key"].endswith(".report.json")
    ]
    later = rows[0].last_updated + timedelta(hours=1)
    fixed = rows[0].model_copy(update={"first_name": "Fixed", "last_updated": later})
    s3.put_object(Bucket="ingest-local", Key=copy, Body=dump_rows(SPEC, [fixed]))
    redriven = ingestctl(up, "redrive", "--table", "staff")
    assert redriven.returncode == 0, redriven.stderr
    assert "moved 1 message" in redriven.stdout
    wait_until(lambda: status(up)[1]["tables"]["staff"]["quarantined"] == 0, "the fixed merge")
    up.wait_line(r"^alarm table=staff .*state=OK", timeout=30)
    resumed = ingestctl(up, "resume", "--table", "staff")
    assert resumed.returncode == 0, resumed.stderr
    events = up.client("events")
    assert events.describe_rule(Name=naming.ingest_schedule_rule_name())["State"] == "ENABLED"

    code, report = status(up)
    assert code == 0
    table = report["tables"]["staff"]
    assert (table["latest_rows"], table["history_rows"], table["dlq_messages"]) == (
        len(rows),
        1,
        0,
    )
    latest = read_latest(BucketStore("ingest-local", s3), SPEC).rows  # audit columns stripped
    expected = sorted(row_json(SPEC, r) for r in [fixed, *rows[1:]])
    assert sorted(row_json(SPEC, r) for r in latest) == expected
