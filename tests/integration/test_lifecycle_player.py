"""The local lifecycle player on moto, after real merges: it expires exactly the noncurrent
versions no reader or merge still needs (shared/retention.py), at the rules' ages."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from ops.local.lifecycle import LifecyclePlayer
from shared.layout import latest_partition_prefix, staging_key
from shared.partitions import PartitionManifest
from shared.reader import read_latest
from shared.retention import DAY_SECONDS, LONGEST_READ_SECONDS, TRIGGER_VERSION_DAYS
from shared.storage import BucketStore
from tests.integration.merge_pipeline import BUCKET, REGION, Pipeline, table_partitions
from tests.rows import staff


class Clock:
    """The player's time: moto stamps versions with the real clock, the test moves on."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def at(self, days: float, seconds: float = 0) -> Clock:
        self.offset = timedelta(days=days, seconds=seconds)
        return self


def listing(prefix: str = "") -> tuple[Counter[str], Counter[str]]:
    """Versions and delete markers per key."""
    s3 = boto3.client("s3", region_name=REGION)
    versions: Counter[str] = Counter()
    markers: Counter[str] = Counter()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=prefix):
        versions.update(v["Key"] for v in page.get("Versions", []))
        markers.update(m["Key"] for m in page.get("DeleteMarkers", []))
    return versions, markers


def player(clock: Clock) -> LifecyclePlayer:
    return LifecyclePlayer(boto3.client("s3", region_name=REGION), BUCKET, clock=clock)


@pytest.fixture
def partitioned(aws):
    with table_partitions("staff", 2):
        yield Pipeline("staff")


def merge_batches(pipeline: Pipeline) -> list[dict[str, object]]:
    """A baseline and updates across partitions: replaced partitions, manifests, one file."""
    pipeline.upload_baseline([staff(k, 0) for k in range(1, 7)])
    assert pipeline.deliver().failed == []
    for number, keys in enumerate([(1, 3), (2, 5), (6, 7)], start=1):
        pipeline.stage([staff(k, 20 * number, name=f"v{number}") for k in keys])
        assert pipeline.deliver().failed == []
    return [r.model_dump() for r in read_latest(BucketStore(BUCKET), pipeline.spec).rows]


def test_versions_a_reader_may_hold_outlive_the_read_window_and_then_go(partitioned):
    rows = merge_batches(partitioned)
    versions, markers = listing()
    assert any(n > 1 for key, n in versions.items() if key.endswith("_manifest.json"))
    assert markers  # the replaced partitions, dropped from view
    clock = Clock()
    # within a day (the shortest S3 expiry, past the longest read) nothing goes
    assert player(clock.at(0, LONGEST_READ_SECONDS)).run_once().versions == 0
    assert player(clock.at(1, -60)).run_once().versions == 0
    assert listing() == (versions, markers)
    run = player(clock.at(1, 60)).run_once()
    after, left_markers = listing()
    # every key keeps exactly its current version; no marker is left with nothing behind it
    assert after == Counter(key for key in versions if key not in markers)
    assert left_markers == Counter()
    assert run.versions == sum(versions.values()) - len(after)
    assert run.delete_markers == sum(markers.values())
    assert [r.model_dump() for r in read_latest(BucketStore(BUCKET), partitioned.spec).rows] == rows


def test_an_overwritten_staging_version_outlives_its_message_and_a_redrive(partitioned):
    merge_batches(partitioned)
    partitioned.stage([staff(1, 100, name="first")])
    partitioned.stage([staff(1, 120, name="second")])  # first is noncurrent, not merged
    clock = Clock()
    player(clock.at(TRIGGER_VERSION_DAYS, -60)).run_once()
    staged, _ = listing(staging_key("staff"))
    assert staged[staging_key("staff")] == 2
    assert partitioned.deliver().failed == []  # both merge: the later one wins
    latest = read_latest(BucketStore(BUCKET), partitioned.spec).rows
    names = {r.model_dump()["first_name"] for r in latest}
    assert "second" in names
    assert "first" not in names
    assert any('"first"' in text for text in partitioned.history_texts())  # merged, superseded


def test_an_unmerged_staging_version_goes_once_no_message_can_name_it(partitioned):
    partitioned.stage([staff(1, 100, name="first")])
    partitioned.stage([staff(1, 120, name="second")])
    player(Clock().at(TRIGGER_VERSION_DAYS, 60)).run_once()
    staged, _ = listing(staging_key("staff"))
    assert staged[staging_key("staff")] == 1  # the current one stays


def test_a_partition_a_twin_wrote_again_stays_readable_by_the_manifests_version(partitioned):
    """Two merges of one batch on one state write the same partition key (it names its
    content); the manifest committed names one version: the player must not expire it."""
    partitioned.upload_baseline([staff(k, 0) for k in range(1, 5)])
    assert partitioned.deliver().failed == []
    partitioned.stage([staff(1, 20, name="twin")])
    (message,) = partitioned.receive_records()
    ref = partitioned.ref(message)
    first, _ = partitioned.hooked_service()
    second, hooks = partitioned.hooked_service()
    # the second merge has planned; before it writes its partition, the first runs whole
    hooks.before("PutObject", latest_partition_prefix("staff"), lambda _: first.process(ref))
    second.process(ref)
    manifest = PartitionManifest.model_validate_json(
        partitioned.get(f"{latest_partition_prefix('staff')}_manifest.json")
    )
    player(Clock().at(1, 60)).run_once()
    store = BucketStore(BUCKET)
    for part in manifest.partitions:
        store.get(part.key, part.version_id)  # still there
    names = [r.model_dump()["first_name"] for r in read_latest(store, partitioned.spec).rows]
    assert names[0] == "twin"


def test_a_lifecycle_day_shorter_than_the_longest_read_is_refused(aws):
    with pytest.raises(ValueError, match="reader"):
        LifecyclePlayer(
            boto3.client("s3", region_name=REGION), BUCKET, day_seconds=LONGEST_READ_SECONDS - 1
        )
    assert DAY_SECONDS > LONGEST_READ_SECONDS  # real time is always allowed
