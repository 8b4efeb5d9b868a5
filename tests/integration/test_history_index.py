"""The history index agrees with the log and with a full scan, through crashes and late rows.

Random histories of staff files (in-file duplicates, files read earlier than others: late
rows) go through the real merge handler on moto; a delivery may crash before or after its Nth
S3 call (a botocore event hook on the merge's own client) and is then redelivered. After every
delivery, crashed or not, the readers that use the index (`status`'s totals, `history` rows,
the merge's known-history check) must equal what the log's entries say; once everything is
delivered, they must also equal a full scan of every history object, and `history KEY` /
`asof` must equal shared.timeline over that scan, at every time a version starts or ends (and
a microsecond either side). Checkpoints come every 1 or 2 entries, each leaf and bucket folds
once every 2 checkpoints, leaves split past 3 rows, buckets of the index by time hold 2 keys
and frames close one row past one per key here, so every path (a checkpoint, entries after
it, rows pending in deltas, a fold, leaf splits, frames split, a late row rewriting earlier
frames, a checkpoint missing while copies lag) is taken.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from ops.inspection import row_history, table_as_of
from ops.local.moto_edge import aws_like_moto
from services.merge.commit import CommitLog
from services.merge.known import known_history
from shared import history_frames, history_index
from shared.commitlog import entries_after
from shared.history import load_history
from shared.history_lookup import committed_history
from shared.observation import observed_at_metadata
from shared.reader import iter_history, read_latest_versions
from shared.rows import dump_lines, dump_rows, row_json, validate_rows
from shared.schemas import RowModel, Staff
from shared.storage import BucketStore
from shared.timeline import as_of, timelines
from shared.versions import version_json
from tests import rows
from tests.integration.index_oracle import index_problems, log_history, scanned_history
from tests.integration.merge_pipeline import (
    BUCKET,
    LAYOUTS,
    REGION,
    Call,
    Pipeline,
    S3Hooks,
    crash,
    table_partitions,
)

KEYS = (1, 2, 3, 4)
S3_OPERATIONS = (
    "GetObject",
    "HeadObject",
    "PutObject",
    "DeleteObject",
    "DeleteObjects",
    "ListObjectsV2",
    "ListObjectVersions",
)
EARLY = datetime(2020, 1, 1, tzinfo=UTC)  # files read "then" are observed before the others


@pytest.fixture
def small_index(monkeypatch):
    monkeypatch.setattr(history_index, "INDEX_EVERY", 2)
    monkeypatch.setattr(history_index, "LEAF_ROWS", 3)
    monkeypatch.setattr(history_index, "FOLD_EVERY", 2)
    monkeypatch.setattr(history_frames, "FRAME_KEYS", 2)
    monkeypatch.setattr(history_frames, "FRAME_GROWTH", 1)


def staff_id(row: RowModel) -> int:
    assert isinstance(row, Staff)
    return row.staff_id


def crash_at_call(hooks: S3Hooks, n: int, after: bool) -> None:
    """The merge dies at its Nth S3 call (before it is sent, or once its answer is in)."""
    count = itertools.count(1)

    def action(call: Call) -> None:
        if next(count) == n:
            crash(call)

    for operation in S3_OPERATIONS:
        (hooks.after if after else hooks.before)(operation, "", action, times=None)


def check_known(store: BucketStore, pipeline: Pipeline) -> None:
    """The merge's known-history check on the state it would plan on: what the log says."""
    spec = pipeline.spec
    state = CommitLog(store, spec, 3).roll_forward(CommitLog(store, spec, 3).read_state())
    known = known_history(store, state, set(KEYS))
    history = load_history(
        spec, dump_lines(log_history(spec, entries_after(store, spec.name, 0))), "log"
    )
    assert known.texts == {row_json(spec, h.row) for h in history}
    for key in KEYS:
        expected = [(h.row, h.observed, h.change) for h in history if staff_id(h.row) == key]
        found = [(v.row, v.observed, v.change) for v in known.versions.get(key, [])]
        assert sorted(found, key=repr) == sorted(expected, key=repr)  # pending ones come last


def check(pipeline: Pipeline, *, settled: bool) -> None:
    store, spec = BucketStore(BUCKET, pipeline.s3), pipeline.spec
    assert index_problems(store, spec) == []
    check_known(store, pipeline)
    if settled:
        # every entry copied, so index_problems compared the index with a full scan too
        assert {e.history_key for e in entries_after(store, spec.name, 0) if e.history_key} == {
            key for key, _ in iter_history(store, spec)
        }
        check_readers(store, pipeline)


def check_readers(store: BucketStore, pipeline: Pipeline) -> None:
    """`history KEY` and `asof` from the index equal shared.timeline over a full scan."""
    spec = pipeline.spec
    latest = [json.loads(version_json(spec, v)) for v in read_latest_versions(store, spec)]
    history = [json.loads(line) for line in scanned_history(store, spec)]
    expected = timelines(latest, history, spec.primary_key)
    for key in KEYS:
        assert row_history(store, spec, key) == expected.get(key, [])
    for at in asked_times(latest + history):
        report = validate_rows(spec, as_of(latest, history, spec.primary_key, at), "asof")
        assert table_as_of(store, spec, at) == dump_rows(spec, report.rows)


def asked_times(stored: list[dict[str, Any]]) -> list[datetime]:
    """Every time a version started or ended, a microsecond either side, and two others:
    every frame of the index by time, and each of its edges, is asked about."""
    marks = {EARLY + timedelta(minutes=3), datetime.now(UTC)}
    for row in stored:
        for column in ("_observed", "_deleted_at", "last_updated"):
            if isinstance(row.get(column), str):
                mark = datetime.fromisoformat(row[column].split("#")[0].replace("Z", "+00:00"))
                mark = mark if mark.tzinfo else mark.replace(tzinfo=UTC)
                marks |= {mark - timedelta(microseconds=1), mark, mark + timedelta(microseconds=1)}
    return sorted(marks)


names = st.sampled_from(["Ann", "Bo", "Cy"])
a_row = st.tuples(st.sampled_from(KEYS), names, st.integers(0, 5))
a_file = st.fixed_dictionaries(
    {
        "rows": st.lists(a_row, min_size=1, max_size=4),
        "early": st.none() | st.integers(0, 6),  # read at EARLY + n minutes: a late file
        "crash": st.none() | st.tuples(st.integers(1, 30), st.booleans()),
    }
)


def staged(spec_rows: list[tuple[int, str, int]]) -> list[Staff]:
    return [rows.staff(key, minutes, name) for key, name, minutes in spec_rows]


def run_history(layout: str, files: list[dict[str, Any]]) -> Iterator[Pipeline]:
    with mock_aws(), aws_like_moto(), table_partitions("staff", LAYOUTS[layout]):
        pipeline = Pipeline("staff")
        for file in files:
            early = file["early"]
            metadata = (
                None if early is None else observed_at_metadata(EARLY + timedelta(minutes=early))
            )
            pipeline.stage(staged(file["rows"]), metadata=metadata)
            if file["crash"] is not None:
                service, hooks = pipeline.hooked_service()
                crash_at_call(hooks, *file["crash"])
                pipeline.invoke_with(service, pipeline.receive_records())
                check(pipeline, settled=False)
            assert pipeline.deliver(rounds=3).failed == []
            check(pipeline, settled=True)
        yield pipeline


@pytest.mark.usefixtures("aws_env", "small_index")
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    layout=st.sampled_from(sorted(LAYOUTS)),
    files=st.lists(a_file, min_size=1, max_size=8),
    every=st.sampled_from([1, 2]),
)
def test_the_index_agrees_with_the_log_and_a_full_scan(layout, files, every):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(history_index, "INDEX_EVERY", every)
        for pipeline in run_history(layout, files):
            assert pipeline.log_entries()  # something was committed


@pytest.mark.usefixtures("aws", "small_index")
def test_reading_one_key_reads_its_leaf_and_the_entries_after_a_checkpoint():
    """`history KEY` / the late-row check read a checkpoint, the key's leaf, one chunk of
    each delta it has not folded and at most INDEX_EVERY entries: never a history object,
    never a listing."""
    pipeline = Pipeline("staff")
    for minutes in range(9):  # 9 entries, each sending the 4 keys' rows to history
        pipeline.stage(staged([(key, "Ann" if minutes % 2 else "Bo", minutes) for key in KEYS]))
        assert pipeline.deliver().failed == []
    client = boto3.client("s3", region_name=REGION)
    hooks, store = S3Hooks(client), BucketStore(BUCKET, client)
    found = committed_history(store, pipeline.spec, {3})
    assert [staff_id(h.row) for h in found] == [3] * 8
    gets = [call for call in hooks.calls if call.startswith("GetObject")]
    assert not [call for call in hooks.calls if "history/" in call or call.startswith("List")]
    checkpoints = [c for c in gets if "/index/0" in c]
    leaves = [c for c in gets if "/index/leaves/" in c]
    deltas = [c for c in gets if "/index/deltas/" in c]
    entries = [c for c in gets if "_state/log/" in c]
    assert len(checkpoints) == 1
    assert len(leaves) <= 1
    assert 1 <= len(leaves) + len(deltas) <= 2 * history_index.FOLD_EVERY  # two cycles at most
    assert len(entries) <= history_index.INDEX_EVERY  # entry 9, and the look for 10
    assert len(pipeline.keys("history/staff/")) == 8
