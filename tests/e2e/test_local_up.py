"""`ingestctl local up` in a subprocess: resources, notifications, dispatch; then the real merge."""

import json
import re
import subprocess
import time
from urllib.parse import unquote_plus

import pytest

from ops.sample_data import SampleDatabase
from shared import naming
from shared.layout import archive_prefix, baseline_key, history_prefix, latest_key, staging_key
from shared.rows import dump_rows, validate_rows
from shared.tables import get_table
from tests.e2e.local_up import INGESTCTL, ROOT, LocalUp, merge_handler_missing
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
needs_merge = pytest.mark.skipif(
    merge_handler_missing(), reason="services.merge.handler is not in this checkout yet"
)


@pytest.fixture
def local_up(tmp_path):
    started = []

    def start(*args):
        runtime = LocalUp(tmp_path / "logs", *args)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.stop()


def test_up_creates_the_resources_and_an_upload_reaches_its_table_function(local_up):
    up = local_up(
        "--merge-handler",
        "tests.integration.local_handlers:record_event",
        "--tables",
        "staff,payment",
        "--tables",
        "payment_type",
    )
    ready = up.wait_line(r"^ready ", timeout=30)
    assert ready == f"ready endpoint={up.endpoint} bucket=ingest-local"
    assert up.seen == [ready]  # exactly one line, nothing before it

    s3, sqs, events = up.client("s3"), up.client("sqs"), up.client("events")
    assert s3.get_bucket_versioning(Bucket="ingest-local")["Status"] == "Enabled"
    queues = {url.rsplit("/", 1)[-1] for url in sqs.list_queues()["QueueUrls"]}
    for table in ("staff", "payment", "payment_type"):
        assert {naming.merge_queue_name(table), naming.merge_dlq_name(table)} <= queues
    assert naming.merge_queue_name("address") not in queues
    rule = events.describe_rule(Name=naming.ingest_schedule_rule_name())
    assert rule["State"] == "ENABLED"
    assert events.describe_event_bus(Name=naming.event_bus_name())["Name"] == "ingest-events"

    started = time.monotonic()
    s3.put_object(Bucket="ingest-local", Key="staging/payment_type.json", Body=b"[]")
    line = up.wait_line(r"^merge table=payment_type key=staging/payment_type.json ", timeout=5)
    assert time.monotonic() - started < 4  # typically well under a second
    assert line.endswith(" receive=1 ok")
    seen = s3.list_objects_v2(Bucket="ingest-local", Prefix="_seen/ingest-merge-payment_type/")
    events_seen = [
        json.loads(s3.get_object(Bucket="ingest-local", Key=o["Key"])["Body"].read())
        for o in seen["Contents"]
    ]
    keys = [
        unquote_plus(json.loads(r["body"])["Records"][0]["s3"]["object"]["key"])
        for e in events_seen
        for r in e["event"]["Records"]
        if "Records" in json.loads(r["body"])
    ]
    assert keys == ["staging/payment_type.json"]
    assert {e["env"]["TABLE_NAME"] for e in events_seen} == {"payment_type"}

    assert up.stop() == 0
    lines = up.drain()
    assert not any("payment_type.json" in x and "table=payment " in x for x in lines)
    assert "HTTP/1.1" not in up.stderr + "\n".join(lines)  # moto's request log stays off


def test_up_says_clearly_when_a_handler_is_missing(tmp_path):
    result = subprocess.run(
        [INGESTCTL, "local", "up", "--port", "0", "--merge-handler", "services.nope.handler:h"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "a Lambda handler is missing" in result.stderr
    assert "services.nope" in result.stderr
    assert "Traceback" not in result.stderr


def _upload(s3, key, table, rows):
    spec = get_table(table)
    report = validate_rows(spec, rows, key)
    assert report.ok, report.problems
    data = dump_rows(spec, report.rows)
    s3.put_object(Bucket="ingest-local", Key=key, Body=data)
    return data


def _read(s3, key):
    return json.loads(s3.get_object(Bucket="ingest-local", Key=key)["Body"].read())


@needs_merge
def test_up_merges_an_upload_with_the_real_merge(local_up):
    up = local_up("--tables", "staff")
    up.wait_line(r"^ready ", timeout=30)
    s3 = up.client("s3")
    db = SampleDatabase(3)
    baseline = db.rows("staff")
    _upload(s3, baseline_key("staff"), "staff", baseline)
    up.wait_line(r"^merge table=staff key=baseline/staff.json .* ok$", timeout=10)
    wait_until(
        lambda: "Contents" in s3.list_objects_v2(Bucket="ingest-local", Prefix=latest_key("staff"))
    )
    assert len(_read(s3, latest_key("staff"))) == len(baseline)

    changed = dict(baseline[0])
    changed["email_address"] = "changed@terrifictotes.example"
    changed["last_updated"] = db.now
    inserted = {**baseline[1], "staff_id": 999, "created_at": db.now, "last_updated": db.now}
    staged = _upload(s3, staging_key("staff"), "staff", [changed, inserted])
    up.wait_line(r"^merge table=staff key=staging/staff.json .* ok$", timeout=10)

    def staging_gone():
        versions = s3.list_object_versions(Bucket="ingest-local", Prefix=staging_key("staff"))
        return not versions.get("Versions")

    wait_until(staging_gone)
    latest = {r["staff_id"]: r for r in _read(s3, latest_key("staff"))}
    assert len(latest) == len(baseline) + 1
    assert latest[changed["staff_id"]]["email_address"] == "changed@terrifictotes.example"
    assert 999 in latest
    history_keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket="ingest-local", Prefix=history_prefix("staff"))[
            "Contents"
        ]
    ]
    history = [row for key in history_keys for row in _read(s3, key)]
    assert [r["staff_id"] for r in history] == [changed["staff_id"]]
    assert history[0]["email_address"] == baseline[0]["email_address"]
    archived = s3.list_objects_v2(Bucket="ingest-local", Prefix=archive_prefix("staff"))
    archived_bytes = [
        s3.get_object(Bucket="ingest-local", Key=o["Key"])["Body"].read()
        for o in archived["Contents"]
    ]
    assert staged in archived_bytes  # the staging bytes, unchanged
    for kind in ("BaselinePromoted", "HistoryAppended", "StagingArchived"):
        up.wait_line(rf"^event consumer=operator type={kind} .*table=staff$", timeout=10)
    assert not [x for x in up.drain() if re.search(r" failed", x)]


@needs_merge
def test_the_demo_runs_to_the_end(tmp_path):
    result = subprocess.run(
        [INGESTCTL, "local", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "latest/ equals the source database" in result.stdout
