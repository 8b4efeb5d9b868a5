"""Partitioned latest: the same merge as one file, batch after batch; the switch to partitions;
what a typical merge touches; the one reader of both forms."""

import random

import pytest
from moto import mock_aws

from ops.local.moto_edge import aws_like_moto
from services.merge import handler as merge_handler
from shared.commitlog import BATCH_METADATA, SEQ_METADATA
from shared.layout import latest_key, latest_manifest_key, latest_partition_prefix
from shared.partitions import PartitionManifest
from shared.reader import iter_latest, read_latest
from shared.rows import dump_rows, row_json
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.merge_pipeline import BUCKET, Pipeline, table_partitions
from tests.rows import staff

SPEC = TABLES["staff"]


def random_batches(seed, batches=6):
    """Inserts at the tail, updates, silent edits, late rows and in-file duplicates."""
    rng = random.Random(seed)
    top, out = 0, []
    for number in range(batches):
        rows = []
        for _ in range(rng.randint(1, 8)):
            if top == 0 or rng.random() < 0.4:
                top += 1
                key = top
            else:
                key = rng.randint(1, top)
            minutes = number * 20 + rng.choice([-30, 0, 0, 5, 10])
            rows.append(staff(key, minutes, name=rng.choice(["Ana", "Bo", "Cy"])))
        out.append(rows)
    return out


def run_batches(batches, rows_per_partition):
    """The batches applied in a fresh account, one after another."""
    with mock_aws(), aws_like_moto(), table_partitions("staff", rows_per_partition):
        pipeline = Pipeline("staff")
        for rows in batches:
            pipeline.stage(rows)
            assert pipeline.deliver().failed == []
        manifest = (
            PartitionManifest.model_validate_json(pipeline.get(latest_manifest_key("staff")))
            if rows_per_partition
            else None
        )
        current = pipeline.keys(latest_partition_prefix("staff"))
        return pipeline.latest_texts(), pipeline.history_texts(), (manifest, current)


@pytest.mark.parametrize("seed", range(4))
def test_partitioned_latest_and_history_equal_the_single_files(aws_env, seed):
    batches = random_batches(seed)
    single_latest, single_history, _ = run_batches(batches, None)
    latest, history, pipeline = run_batches(batches, 3)
    assert latest == single_latest
    assert history == single_history
    assert max(history.values(), default=1) == 1
    # the manifest lists exactly the partition objects left current; the rest were dropped
    manifest, current = pipeline
    listed = sorted(p.key for p in manifest.partitions)
    assert current == [
        *listed,
        latest_manifest_key("staff"),
    ]
    assert all(p.high - p.low == 2 for p in manifest.partitions)


def test_a_table_becoming_partitioned_moves_its_rows_on_the_next_merge(aws):
    pipeline = Pipeline("staff")
    pipeline.upload_baseline([staff(k, 0) for k in range(1, 8)])
    assert pipeline.deliver().failed == []
    assert pipeline.keys("latest/") == [latest_key("staff")]
    with table_partitions("staff", 4):
        # a new registry comes with a new deployment: a service built on it (the one built
        # before holds the table's spec of its day)
        pipeline.use(merge_handler.build_service(pipeline.settings))
        pipeline.stage([staff(2, 20, name="Jo"), staff(8, 20)])
        assert pipeline.deliver().failed == []
        assert pipeline.latest_texts() == [
            row_json(SPEC, r)
            for r in [staff(1, 0), staff(2, 20, name="Jo"), *(staff(k, 0) for k in range(3, 8))]
        ] + [row_json(SPEC, staff(8, 20))]
        # the one file is dropped (a noncurrent version now), every range is a partition
        keys = pipeline.keys("latest/")
        assert latest_key("staff") not in keys
        assert [k.split("/")[-1][:25] for k in keys] == [
            "000000000000-000000000003",
            "000000000004-000000000007",
            "000000000008-000000000011",
            "_manifest.json",
        ]
        assert list(pipeline.history_texts()) == [row_json(SPEC, staff(2, 0))]


def test_a_typical_merge_rewrites_only_the_partitions_it_touches(aws):
    with table_partitions("staff", 10):
        pipeline = Pipeline("staff")
        pipeline.upload_baseline([staff(k, 0) for k in range(1, 60)])
        assert pipeline.deliver().failed == []
        before = PartitionManifest.model_validate_json(pipeline.get(latest_manifest_key("staff")))
        assert len(before.partitions) == 6
        pipeline.stage([staff(58, 20, name="Jo"), staff(60, 20), staff(61, 20)])
        assert pipeline.deliver().failed == []
        stored = pipeline.s3.get_object(Bucket=BUCKET, Key=latest_manifest_key("staff"))
        after = PartitionManifest.model_validate_json(stored["Body"].read())
        changed = {p.low for p in after.partitions} ^ {p.low for p in before.partitions}
        kept = {p.key for p in after.partitions} & {p.key for p in before.partitions}
        assert changed == {60}  # a new partition at the tail
        assert len(kept) == 5  # the first five untouched; the sixth rewritten
        assert stored["Metadata"][BATCH_METADATA] == after.batch
        assert stored["Metadata"][SEQ_METADATA] == str(after.seq) == "2"
        assert after.rows == 61


def test_the_reader_reads_partitions_by_the_versions_the_manifest_names(aws):
    with table_partitions("staff", 2):
        pipeline = Pipeline("staff")
        pipeline.upload_baseline([staff(k, 0) for k in range(1, 6)])
        assert pipeline.deliver().failed == []
        store = BucketStore(BUCKET, pipeline.s3)
        snapshot = read_latest(store, SPEC)
        manifest = PartitionManifest.model_validate_json(pipeline.get(latest_manifest_key("staff")))
        # a reader holding this manifest still finds its partitions after a merge drops them
        pipeline.stage([staff(k, 20, name="Jo") for k in range(1, 6)])
        assert pipeline.deliver().failed == []
        for part in manifest.partitions:
            assert not store.exists(part.key)
            assert store.get(part.key, part.version_id).data
        assert [len(rows) for rows, _ in iter_latest(store, SPEC)] == [1, 2, 2]
        assert snapshot.etag != read_latest(store, SPEC).etag
        assert read_latest(store, SPEC).rows == [staff(k, 20, name="Jo") for k in range(1, 6)]


def test_a_partition_that_is_not_canonical_is_validated_and_a_bad_one_stops_the_merge(aws):
    with table_partitions("staff", 10):
        pipeline = Pipeline("staff")
        pipeline.upload_baseline([staff(1, 0), staff(2, 0)])
        assert pipeline.deliver().failed == []
        manifest = PartitionManifest.model_validate_json(pipeline.get(latest_manifest_key("staff")))
        (part,) = manifest.partitions
        # hand-written but valid (unsorted, spaced): merged by the slow, validating path
        rows = [staff(2, 0), staff(1, 0)]
        pipeline.s3.put_object(Bucket=BUCKET, Key=part.key, Body=dump_rows(SPEC, rows) + b" ")
        fixed = manifest.model_copy(
            update={"partitions": [part.model_copy(update={"version_id": None})]}
        )
        pipeline.s3.put_object(
            Bucket=BUCKET, Key=latest_manifest_key("staff"), Body=fixed.model_dump_json().encode()
        )
        pipeline.stage([staff(3, 20)])
        assert pipeline.deliver().failed == []
        assert pipeline.latest_texts() == [
            row_json(SPEC, staff(k, 0 if k < 3 else 20)) for k in (1, 2, 3)
        ]
        # a row that fails its schema: the merge stops (the record fails), latest is kept
        manifest = PartitionManifest.model_validate_json(pipeline.get(latest_manifest_key("staff")))
        (part,) = manifest.partitions
        pipeline.s3.put_object(Bucket=BUCKET, Key=part.key, Body=b'[{"staff_id": 1}]')
        fixed = manifest.model_copy(
            update={"partitions": [part.model_copy(update={"version_id": None})]}
        )
        pipeline.s3.put_object(
            Bucket=BUCKET, Key=latest_manifest_key("staff"), Body=fixed.model_dump_json().encode()
        )
        before = pipeline.get(latest_manifest_key("staff"))
        pipeline.stage([staff(1, 30)])
        assert pipeline.deliver().failed != []
        assert pipeline.get(latest_manifest_key("staff")) == before


def test_a_typical_merge_makes_nine_requests_and_a_read_and_write_per_partition(aws):
    with table_partitions("staff", 10):
        pipeline = Pipeline("staff")
        pipeline.upload_baseline([staff(k, 0) for k in range(1, 60)])
        assert pipeline.deliver().failed == []
        service, hooks = pipeline.hooked_service()
        pipeline.stage([staff(58, 20, name="Jo"), staff(60, 20), staff(61, 20)])
        (message,) = pipeline.receive_records()
        service.process(pipeline.ref(message))
        partitions = ["GetObject", "PutObject", "PutObject"]  # 50..59 rewritten, 60..69 new
        assert [call.split(" ")[0] for call in hooks.calls] == [
            "GetObject",  # the staging version
            "GetObject",  # the table's schema state (absent: nothing added)
            "GetObject",  # latest's partition manifest
            *partitions,
            "PutObject",  # the log entry: the commit
            "PutObject",  # history, copied from the entry
            "PutObject",  # the partition manifest, copied from the entry (it names the seq)
            "DeleteObjects",  # the replaced partition
            "PutObject",  # archive
            "DeleteObject",  # the staging version
        ]
        assert len(hooks.calls) == 9 + len(partitions)


def test_a_typical_merge_of_a_one_file_latest_makes_nine_requests(aws):
    with table_partitions("staff", None):
        pipeline = Pipeline("staff")
        pipeline.upload_baseline([staff(k, 0) for k in range(1, 60)])
        assert pipeline.deliver().failed == []
        service, hooks = pipeline.hooked_service()
        pipeline.stage([staff(58, 20, name="Jo"), staff(60, 20), staff(61, 20)])
        (message,) = pipeline.receive_records()
        service.process(pipeline.ref(message))
        expected = [
            "GetObject staging/staff.json",
            "GetObject _state/schema/staff.json",  # the schema state (absent: nothing added)
            "GetObject latest/staff.json",
            "PutObject _state/log/staff/000000000002.json",  # the commit
            "PutObject history/staff/",  # copied from the entry
            "PutObject latest/staff.json",  # copied from the entry (If-Match on what was read)
            "GetObject _state/log/staff/000000000003.json",  # an entry it would have missed
            "PutObject archive/staff/",
            "DeleteObject staging/staff.json",
        ]
        assert len(hooks.calls) == len(expected), hooks.calls
        for call, prefix in zip(hooks.calls, expected, strict=True):
            assert call.startswith(prefix), (call, prefix)
