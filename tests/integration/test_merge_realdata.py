"""The real 2024-11-14 → 2024-11-15 change set, merged table by table, gives the 11-15 snapshot."""

import pytest

from shared.rows import row_json, validate_rows
from shared.tables import TABLES
from tests.integration.merge_pipeline import Pipeline, table_partitions
from tests.realdata import read_jsonl, read_parquet

pytestmark = pytest.mark.realdata

JSONL_TABLES = sorted(set(TABLES) - {"payment"})  # no 2024-11-14 payment file was kept


def snapshot(table, raw):
    report = validate_rows(TABLES[table], raw, table)
    assert report.problems == []
    return {getattr(r, TABLES[table].primary_key): r for r in report.rows}


# 400 keys a partition: the larger tables span several, the smallest fit in one
@pytest.fixture(params=[None, 400], ids=["single", "partitioned"])
def rows_per_partition(request):
    return request.param


@pytest.mark.parametrize("table", JSONL_TABLES)
def test_real_change_set_merges_to_the_next_snapshot(aws, table, rows_per_partition):
    with table_partitions(table, rows_per_partition):
        check_real_change_set(table)


def check_real_change_set(table):
    spec = TABLES[table]
    before, after = snapshot(table, read_jsonl(table)), snapshot(table, read_parquet(table))
    changed = [
        row
        for key, row in sorted(after.items())
        if key not in before or row_json(spec, before[key]) != row_json(spec, row)
    ]
    pipeline = Pipeline(table)
    pipeline.upload_baseline(list(before.values()))
    assert pipeline.deliver().failed == []
    pipeline.stage(changed)
    assert pipeline.deliver().failed == []

    assert pipeline.latest_texts() == [row_json(spec, after[key]) for key in sorted(after)]
    superseded = {
        row_json(spec, before[key])
        for key in (getattr(r, spec.primary_key) for r in changed)
        if key in before
    }
    assert set(pipeline.history_texts()) == superseded
    assert max(pipeline.history_texts().values(), default=1) == 1
    assert pipeline.staging_versions() == pipeline.baseline_versions() == []
    if table == "design":
        silent = {
            h.row.design_id: h for h in pipeline.history() if h.superseded_at == h.row.last_updated
        }
        assert {139, 348, 358} <= set(silent)
        assert all(silent[k].row.file_location != after[k].file_location for k in (139, 348, 358))
