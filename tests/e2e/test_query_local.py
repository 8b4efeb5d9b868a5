"""`ingestctl query` against `ingestctl local up` (issue 19): a subprocess reading from moto's
endpoint returns what the bucket holds, read here independently through boto3 and pyarrow."""

import io
import json
import subprocess

import pyarrow.parquet as pq
import pytest

from ops.sample_data import SampleDatabase
from shared.layout import baseline_key, staging_key
from shared.rows import dump_rows, validate_rows
from shared.tables import get_table
from tests.e2e.local_up import INGESTCTL, ROOT, LocalUp

pytestmark = pytest.mark.e2e
BUCKET = "ingest-local"
TABLES = ("department", "staff")


@pytest.fixture
def up(tmp_path):
    runtime = LocalUp(tmp_path / "logs", "--tables", ",".join(TABLES))
    runtime.wait_line(r"^ready ", timeout=30)
    yield runtime
    runtime.stop()


def query(up, sql):
    done = subprocess.run(
        [INGESTCTL, "--endpoint-url", up.endpoint, "--bucket", BUCKET, "query", sql, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def parquet_rows(s3, prefix):
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    keys = [o["Key"] for o in listed if o["Key"].endswith(".parquet")]
    body = [s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys]
    return [row for data in body for row in pq.read_table(io.BytesIO(data)).to_pylist()]


def test_query_reads_latest_the_warehouse_and_the_change_table_from_moto(up):
    s3 = up.client("s3")
    database = SampleDatabase(5)
    rows = {}
    for name in TABLES:
        spec = get_table(name)
        rows[name] = validate_rows(spec, database.rows(name), "sample").rows
        s3.put_object(Bucket=BUCKET, Key=baseline_key(name), Body=dump_rows(spec, rows[name]))
    first = rows["staff"][0]
    first_id, first_name = first.model_dump()["staff_id"], first.model_dump()["first_name"]
    renamed = first.model_copy(update={"first_name": "Renamed"})
    up.wait_line(r"^merge table=staff key=baseline/staff.json .* ok$", timeout=30)
    s3.put_object(
        Bucket=BUCKET, Key=staging_key("staff"), Body=dump_rows(get_table("staff"), [renamed])
    )
    up.wait_line(r"^merge table=staff key=staging/staff.json .* ok$", timeout=30)
    up.wait_line(r"^transform .* key=BaselinePromoted:department .* ok$", timeout=60)
    up.wait_line(r"^transform .* key=HistoryAppended:staff .* ok$", timeout=60)

    live = query(up, "SELECT staff_id, first_name FROM latest_staff ORDER BY staff_id")
    staff = [r.model_dump() for r in [renamed, *rows["staff"][1:]]]
    expected = sorted((r["staff_id"], r["first_name"]) for r in staff)
    assert [(r["staff_id"], r["first_name"]) for r in live] == expected

    versions = query(
        up,
        "SELECT version, first_name, valid_to IS NULL AS current FROM changes_staff "
        f"WHERE staff_id = {first_id} ORDER BY version",
    )
    assert versions == [
        {"version": 1, "first_name": first_name, "current": False},
        {"version": 2, "first_name": "Renamed", "current": True},
    ]

    dims = query(up, "SELECT staff_id, first_name, department_name FROM dim_staff")
    stored = parquet_rows(s3, "warehouse/dim_staff/")
    assert stored
    assert sorted(json.dumps(d, sort_keys=True) for d in dims) == sorted(
        json.dumps({k: r[k] for k in ("staff_id", "first_name", "department_name")}, sort_keys=True)
        for r in stored
    )
