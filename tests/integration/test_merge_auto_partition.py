"""A one-file latest moves to key-range partitions by itself once it passes its size
(`TableSpec.partition_after_bytes`), mid-stream, through the real handler on moto: nothing
lost, nothing doubled, events name the manifest from then on, and a replay changes nothing."""

import random

import pytest

from shared.layout import latest_key, latest_manifest_key
from shared.partitions import PartitionManifest
from shared.tables import AUTO_PARTITION_ROWS, TABLES
from tests.integration.merge_pipeline import Pipeline, registry_entry
from tests.integration.test_merge_flow import by_type
from tests.rows import staff

LIMIT = 3_000  # bytes: a dozen staff rows


@pytest.fixture
def small_files(aws):
    with registry_entry("staff", rows_per_partition=None, partition_after_bytes=LIMIT):
        yield Pipeline("staff")


def test_a_file_past_its_size_moves_into_partitions_with_its_next_change(small_files):
    pipeline, rng = small_files, random.Random(7)
    expected: dict[int, str] = {}
    superseded: list[str] = []
    for batch in range(12):
        keys = rng.sample(range(1, 40), 4)
        rows = [staff(k, batch + 1, name=f"v{batch}-{k}") for k in keys]
        for row in rows:
            if row.staff_id in expected:
                superseded.append(expected[row.staff_id])
            expected[row.staff_id] = row.first_name
        pipeline.stage(rows)
        assert pipeline.deliver().failed == []

    assert {r.staff_id: r.first_name for r in pipeline.latest_rows()} == expected
    assert sorted(h.row.first_name for h in pipeline.history()) == sorted(superseded)
    manifest = PartitionManifest.model_validate_json(pipeline.get(latest_manifest_key("staff")))
    assert manifest.rows_per_partition == AUTO_PARTITION_ROWS
    assert sum(p.rows for p in manifest.partitions) == len(expected)
    assert pipeline.keys(latest_key("staff")) == []  # the file it moved out of is gone
    appended = by_type(pipeline.events())["HistoryAppended"]
    named = [e["latest_key"] for e in appended]
    switch = named.index(latest_manifest_key("staff"))
    assert switch > 0
    assert set(named[switch:]) == {latest_manifest_key("staff")}
    assert set(named[:switch]) == {latest_key("staff")}

    before = pipeline.latest_texts(), pipeline.history_texts()
    pipeline.replay(pipeline.archives()[-1])  # the last batch again: a no-op
    assert pipeline.deliver().failed == []
    assert (pipeline.latest_texts(), pipeline.history_texts()) == before


def test_a_table_told_to_stay_one_file_does(aws):
    with registry_entry("staff", rows_per_partition=None, partition_after_bytes=None):
        pipeline = Pipeline("staff")
        for batch in range(6):
            pipeline.stage([staff(k, batch, name=f"n{batch}") for k in range(1, 30)])
            assert pipeline.deliver().failed == []
        assert pipeline.keys(latest_manifest_key("staff")) == []
        assert len(pipeline.latest_rows()) == 29


def test_the_fact_tables_start_partitioned_and_the_small_ones_as_one_file():
    facts = {"sales_order", "payment", "purchase_order", "transaction"}
    assert {t for t, spec in TABLES.items() if spec.rows_per_partition} == facts
    assert all(spec.partition_after_bytes for spec in TABLES.values())
