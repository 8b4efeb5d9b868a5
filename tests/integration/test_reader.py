from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from shared.history import HistoryRow, dump_history
from shared.layout import history_key, latest_key
from shared.observation import OBSERVED_COLUMN, Observation
from shared.reader import iter_history, read_history, read_latest
from shared.rows import FileFormatError, dump_rows, validate_rows
from shared.storage import BucketStore
from shared.tables import TABLES
from shared.versions import Version, dump_versions

STAFF = TABLES["staff"]


def staff(staff_id, minute, name="Ana"):
    return {
        "staff_id": staff_id,
        "first_name": name,
        "last_name": "Zieme",
        "department_id": 2,
        "email_address": "a@b.com",
        "created_at": "2024-01-01T00:00:00",
        "last_updated": f"2024-01-01T00:{minute:02d}:00",
    }


@pytest.fixture
def store(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="reader-test")
        yield BucketStore("reader-test", client)


def test_latest_absent_then_present_with_its_etag(store):
    assert not read_latest(store, STAFF).exists
    rows = validate_rows(STAFF, [staff(1, 5), staff(2, 6)], "t").rows
    written = store.put(latest_key("staff"), dump_rows(STAFF, rows))
    snapshot = read_latest(store, STAFF)
    assert snapshot.etag == written.etag
    assert snapshot.rows == rows


def test_a_broken_latest_is_an_error_naming_the_object(store):
    store.put(latest_key("staff"), b'[{"staff_id": 1}]')
    with pytest.raises(FileFormatError, match=r"s3://reader-test/latest/staff\.json"):
        read_latest(store, STAFF)


def test_history_objects_come_back_oldest_first_with_their_audit_columns(store):
    old, new = validate_rows(STAFF, [staff(1, 1, "Old"), staff(1, 2, "Newer")], "t").rows
    store.put(
        history_key("staff", "20240102T000000000000Z", "b2"),
        dump_history(STAFF, [HistoryRow(new, new.last_updated, "b2")]),
    )
    store.put(
        history_key("staff", "20240101T000000000000Z", "b1"),
        dump_history(STAFF, [HistoryRow(old, new.last_updated, "b1")]),
    )
    found = list(iter_history(store, STAFF))
    assert [rows[0].batch for _, rows in found] == ["b1", "b2"]
    assert found[0][1][0].row == old


def test_latest_rows_come_back_without_their_audit_columns(store):
    rows = validate_rows(STAFF, [staff(1, 5), staff(2, 6)], "t").rows
    seen = Observation(datetime(2026, 12, 1, 12, 0, tzinfo=UTC), 0x55AED6DCD90281E5)
    # latest as the merge writes it: every row carries `_observed`
    data = dump_versions(STAFF, [Version(rows[0], seen), Version(rows[1], None)])
    assert data.count(f'"{OBSERVED_COLUMN}":"{seen.text}"'.encode()) == 1
    store.put(latest_key("staff"), data)
    assert read_latest(store, STAFF).rows == rows


def test_history_rows_keep_their_observation_and_the_row_is_the_tables_own(store):
    old, new = validate_rows(STAFF, [staff(1, 1, "Old"), staff(1, 2, "Newer")], "t").rows
    seen = Observation(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    key = history_key("staff", "20240101T000000000000Z", "b1")
    store.put(key, dump_history(STAFF, [HistoryRow(old, new.last_updated, "b1", seen)]))
    (found,) = read_history(store, STAFF, key)
    assert found.row == old
    assert (found.superseded_at, found.batch, found.observed) == (new.last_updated, "b1", seen)
