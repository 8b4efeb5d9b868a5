"""`ingestctl history` and `asof` through the real merge follow observation order, as latest
does: a file read later wins whatever its rows' `last_updated` (README, "The merge")."""

import json
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from ops.cli import app
from shared.observation import Observation, observed_at_metadata
from shared.reader import read_latest, read_latest_versions
from shared.rows import load_rows
from shared.storage import BucketStore
from shared.tables import TABLES
from tests import rows
from tests.integration.merge_pipeline import BUCKET

SPEC = TABLES["staff"]
T0 = datetime(2024, 11, 4, 9, 0)
READ = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the baseline's read; the files an hour apart


def staff(key, day, name):
    return rows.staff(key, name=name, days=day)


def cli(*args):
    return CliRunner().invoke(app, ["--bucket", BUCKET, *args])


def _key(row):
    return row.staff_id


def _name(row):
    return row.first_name


def asof_names(tmp_path, at):
    out = tmp_path / "asof.json"
    result = cli("asof", "staff", "--at", at.replace(tzinfo=None).isoformat(), "--out", str(out))
    assert result.exit_code == 0, result.output
    return {_key(r): _name(r) for r in load_rows(SPEC, out.read_bytes(), str(out)).rows}


def test_history_and_asof_follow_observation_order_like_latest(pipeline, tmp_path):
    # baseline; then a file with C (stamped day 500); then one read later with "late" (day 400)
    pipeline.upload_baseline(
        [staff(1, 0, "Base"), staff(2, 0, "Other")], observed_at_metadata(READ)
    )
    pipeline.deliver()
    c_read, late_read = READ + timedelta(hours=1), READ + timedelta(hours=2)
    pipeline.stage([staff(1, 500, "C")], metadata=observed_at_metadata(c_read))
    pipeline.deliver()
    pipeline.stage([staff(1, 400, "late")], metadata=observed_at_metadata(late_read))
    pipeline.deliver()

    store = BucketStore(BUCKET, pipeline.s3)
    latest = {_key(r): _name(r) for r in read_latest(store, SPEC).rows}
    assert latest == {1: "late", 2: "Other"}
    observed = {_key(v.row): v.observed for v in read_latest_versions(store, SPEC)}
    assert observed == {1: Observation(late_read), 2: Observation(READ)}

    shown = cli("history", "staff", "1", "--json")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert [v["row"]["first_name"] for v in document] == ["Base", "C", "late"]
    starts = [t.replace(tzinfo=None).isoformat() for t in (READ, c_read, late_read)]
    assert [v["valid_from"] for v in document] == starts
    assert [v["valid_to"] for v in document] == [*starts[1:], None]
    assert [v["observed"] for v in document] == [
        Observation(t).text for t in (READ, c_read, late_read)
    ]

    assert asof_names(tmp_path, READ - timedelta(minutes=1)) == {}
    assert asof_names(tmp_path, READ + timedelta(minutes=30)) == {1: "Base", 2: "Other"}
    between = c_read + timedelta(minutes=30)  # after C was read, before "late" was
    assert asof_names(tmp_path, between) == {1: "C", 2: "Other"}
    assert asof_names(tmp_path, late_read) == {1: "late", 2: "Other"}
