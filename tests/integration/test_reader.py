import json
from datetime import UTC, datetime

import boto3
import pytest

from shared.history import HistoryRow, dump_history
from shared.layout import (
    batch_of_key,
    history_key,
    latest_key,
    latest_manifest_key,
    latest_partition_key,
    quarantine_key,
)
from shared.observation import OBSERVED_COLUMN, Observation
from shared.partitions import PartitionManifest, PartitionRef
from shared.reader import (
    batch_history_keys,
    iter_history,
    read_history,
    read_latest,
    read_tombstones,
)
from shared.rows import FileFormatError, dump_rows, validate_rows
from shared.storage import BucketStore
from shared.tables import TABLES
from shared.versions import Tombstone, Version, dump_versions, tombstone_json, version_json

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
def store(aws):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="reader-test")
    return BucketStore("reader-test", client)


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


def latest_file(*lines: str) -> bytes:
    return ("[" + ",\n".join(lines) + "]").encode()


@pytest.mark.parametrize("layout", ["single", "partitioned"])
def test_tombstones_come_back_from_either_layout_and_rows_without_them(store, layout):
    one, three = validate_rows(STAFF, [staff(1, 5), staff(3, 6)], "t").rows
    seen = Observation(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    gone = [Tombstone(k, seen, datetime(2026, 12, 1, 11, 0), f"b{k}") for k in (2, 4)]
    low = latest_file(version_json(STAFF, Version(one, seen)), tombstone_json(STAFF, gone[0]))
    high = latest_file(version_json(STAFF, Version(three, seen)), tombstone_json(STAFF, gone[1]))
    if layout == "single":
        store.put(latest_key("staff"), latest_file(*json_lines(low), *json_lines(high)))
    else:
        parts = []
        for (lo, hi), data in zip([(0, 2), (3, 9)], [low, high], strict=True):
            key = latest_partition_key("staff", lo, hi, "b", f"d{lo}")
            written = store.put(key, data)
            parts.append(
                PartitionRef(low=lo, high=hi, key=key, version_id=written.version_id, rows=1)
            )
        manifest = PartitionManifest(
            table="staff", batch="b", rows_per_partition=2, partitions=parts
        )
        store.put(latest_manifest_key("staff"), manifest.model_dump_json().encode())
    assert read_tombstones(store, STAFF) == gone
    assert read_latest(store, STAFF).rows == [one, three]


def json_lines(data: bytes) -> list[str]:
    return [json.dumps(raw, separators=(",", ":")) for raw in json.loads(data)]


def test_batch_history_keys_names_the_objects_those_batches_wrote(store):
    for stamp, batch in [("20240101T000000000000Z", "b1"), ("20240102T000000000000Z", "b2")]:
        store.put(history_key("staff", stamp, batch), dump_history(STAFF, []))
    assert batch_history_keys(store, STAFF, {"b2", "nope"}) == [
        history_key("staff", "20240102T000000000000Z", "b2")
    ]
    assert batch_of_key(quarantine_key("staff", "20240102T000000000000Z", "9f")) == "9f"
