"""A crash at any step boundary, then redelivery, ends exactly where an uninterrupted run does."""

import json
from collections import Counter
from datetime import datetime, timedelta

import pytest
from moto import mock_aws

from services.merge import handler as merge_handler
from services.merge.service import BatchBusyError
from shared.layout import batch_id, object_stamp
from shared.rows import row_json
from shared.schemas import Staff
from shared.tables import TABLES
from tests.integration.conftest import AWS_ENV
from tests.integration.merge_pipeline import (
    BUCKET,
    LAYOUTS,
    FaultyStore,
    Pipeline,
    table_partitions,
)

T0 = datetime(2024, 11, 14, 9, 0, 0)


def staff(key, minutes, name="Jeremie"):
    return Staff(
        staff_id=key,
        first_name=name,
        last_name="Franey",
        department_id=2,
        email_address=f"s{key}@terrifictotes.com",
        created_at=T0 - timedelta(days=1),
        last_updated=T0 + timedelta(minutes=minutes),
    )


BASELINE = [staff(1, 0), staff(2, 0), staff(3, 0)]
# an update, a silent edit, a late row, an insert with an older in-file version
STAGED = [
    staff(1, 20, name="Jo"),
    staff(2, 0, name="Edited"),
    staff(3, -10, name="Older"),
    staff(4, 5),
    staff(4, 1, name="First"),
]


BAD = b'[{"staff_id": 1, "first_name": "no other columns"}]'
SCENARIOS = {"merge": STAGED, "empty": b"[]", "rejected": BAD}


def run(staged=STAGED, crash_at=None, after=False, layout="single", names_versions=False):
    """Baseline, then one staging file applied (crashing at its Nth write), then redelivery."""
    with mock_aws(), table_partitions("staff", LAYOUTS[layout]):
        pipeline = Pipeline("staff", lease_seconds=0, names_versions=names_versions)
        base = pipeline.upload_baseline(BASELINE)
        assert pipeline.deliver().failed == []
        put = pipeline.stage(staged)
        batch = batch_id(put["VersionId"], put["ETag"])
        staged = pipeline.s3.head_object(
            Bucket=BUCKET, Key="staging/staff.json", VersionId=put["VersionId"]
        )
        names = {
            batch: "<batch>",
            batch_id(base["VersionId"], base["ETag"]): "<baseline>",
            put["VersionId"]: "<version>",
            object_stamp(staged["LastModified"]): "<stamp>",
        }
        faulty = pipeline.faulty_service(crash_at=crash_at, after=after)
        first = pipeline.invoke_with(faulty, pipeline.receive_records())
        crashed = bool(first.failed)
        assert pipeline.deliver(rounds=2).failed == []
        return crashed, faulty.store.writes, state(pipeline, batch, names)


def state(pipeline, batch, names):
    """Everything observable, with this run's batch id, version and stamp made comparable."""

    def norm(text):
        for name, placeholder in names.items():
            text = text.replace(name, placeholder)
        return text

    history = Counter(
        (row_json(pipeline.spec, h.row), h.superseded_at, norm(h.batch)) for h in pipeline.history()
    )
    events = pipeline.events()
    return {
        "latest": pipeline.latest_bytes(),
        "latest_objects": [norm(key) for key in pipeline.keys("latest/")],
        "history": history,
        "history_objects": len(pipeline.keys("history/")),
        "archives": [pipeline.get(key) for key in pipeline.archives()],
        "quarantine": {
            norm(key): norm(pipeline.get(key).decode()) for key in pipeline.quarantined()
        },
        "dead_letters": len(set(pipeline.dlq_bodies())),  # the one message, maybe sent twice
        "staging": pipeline.staging_versions(),
        "event_ids": {
            norm(e["detail"]["event_id"]) for e in events if e["detail"]["batch"] == batch
        },
        "events": {
            norm(json.dumps(e["detail"], sort_keys=True))
            for e in events
            if e["detail"]["batch"] == batch
        },
    }


@pytest.fixture(scope="module")
def uninterrupted():
    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        return {
            (layout, name): run(staged, layout=layout)
            for name, staged in SCENARIOS.items()
            for layout in LAYOUTS
        }


EXPECTED_WRITES = {
    "single": [
        "put",  # pending marker
        "put",  # manifest: the plan
        "put",  # history
        "put",  # latest (the commit point; the manifest is not rewritten after it)
        "put",  # archive
        "delete",  # exactly the staging version
        "publish",
        "delete",  # pending marker
    ],
    "partitioned": [
        "put",  # pending marker
        "put latest/staff/000000000000-000000000001",  # the three partitions STAGED touches
        "put latest/staff/000000000002-000000000003",
        "put latest/staff/000000000004-000000000005",
        "put",  # manifest: the plan
        "put",  # history
        "put latest/staff/_manifest.json",  # the partition manifest (the commit point)
        "delete latest/staff/",  # the two partitions replaced, in one request
        "put",  # archive
        "delete",  # exactly the staging version
        "publish",
        "delete",  # pending marker
    ],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_uninterrupted_run_is_the_expected_merge(aws_env, uninterrupted, layout):
    crashed, writes, expected = uninterrupted[layout, "merge"]
    assert not crashed
    assert len(writes) == len(EXPECTED_WRITES[layout])
    for write, prefix in zip(writes, EXPECTED_WRITES[layout], strict=True):
        assert write.startswith(prefix), (write, prefix)
    if layout == "partitioned":
        assert writes[7].count("latest/staff/") == 2
        assert len(expected["latest_objects"]) == 4  # three partitions and the manifest
    assert set(expected["history"]) == {
        (row_json(TABLES["staff"], r), at, "<batch>")
        for r, at in [
            (staff(1, 0), staff(1, 20).last_updated),
            (staff(2, 0), staff(2, 0).last_updated),
            (staff(3, -10, name="Older"), staff(3, 0).last_updated),
            (staff(4, 1, name="First"), staff(4, 5).last_updated),
        ]
    }


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_uninterrupted_empty_and_rejected_runs(aws_env, uninterrupted, layout):
    _, writes, empty = uninterrupted[layout, "empty"]
    assert [w.split(" ")[0] for w in writes] == ["put", "put", "delete", "publish", "delete"]
    assert empty["archives"] == []
    assert not empty["history"]
    assert empty["event_ids"] == {"StagingEmpty:staff:<batch>"}
    _, writes, rejected = uninterrupted[layout, "rejected"]
    assert len(writes) == 6  # pending, copy, report, manifest, staging version, publish
    assert len(rejected["quarantine"]) == 2
    assert rejected["dead_letters"] == 1
    assert rejected["event_ids"] == {"StagingRejected:staff:<batch>"}
    assert rejected["latest"] == empty["latest"]


# An empty or rejected file never reaches latest, so its crashes are tested in one layout.
CRASHES = [
    (layout, scenario, crash_at)
    for layout in sorted(LAYOUTS)
    for scenario, steps in (("merge", len(EXPECTED_WRITES[layout])), ("empty", 5), ("rejected", 6))
    if scenario == "merge" or layout == "single"
    for crash_at in range(1, steps + 1)
]


@pytest.mark.parametrize("after", [False, True], ids=["before-write", "after-write"])
@pytest.mark.parametrize(("layout", "scenario", "crash_at"), CRASHES)
def test_crash_then_redelivery_matches_the_uninterrupted_run(
    aws_env, uninterrupted, layout, scenario, crash_at, after
):
    _, writes, expected = uninterrupted[layout, scenario]
    crashed, _, got = run(SCENARIOS[scenario], crash_at=crash_at, after=after, layout=layout)
    assert crashed, f"no crash at write {crash_at}: {writes}"
    assert got == expected, f"crash {'after' if after else 'before'} {writes[crash_at - 1]}"
    assert max(got["history"].values(), default=1) == 1
    merge_handler.use_service(None)


# AWS's notifications name the version: no marker is written or deleted (two writes fewer).
NAMED_CRASHES = [
    (layout, crash_at)
    for layout in sorted(LAYOUTS)
    for crash_at in range(1, len(EXPECTED_WRITES[layout]) - 1)
]


@pytest.mark.parametrize("after", [False, True], ids=["before-write", "after-write"])
@pytest.mark.parametrize(("layout", "crash_at"), NAMED_CRASHES)
def test_crash_then_redelivery_of_an_aws_notification_matches_the_uninterrupted_run(
    aws_env, uninterrupted, layout, crash_at, after
):
    _, _, expected = uninterrupted[layout, "merge"]
    crashed, writes, got = run(
        STAGED, crash_at=crash_at, after=after, layout=layout, names_versions=True
    )
    assert crashed, f"no crash at write {crash_at}: {writes}"
    assert not any("/pending/" in write for write in writes)
    assert got == expected, f"crash {'after' if after else 'before'} {writes[crash_at - 1]}"
    merge_handler.use_service(None)


def test_crash_after_the_commit_then_another_batch_then_redelivery(aws, layout):
    """The commit is found in an older version of latest, so the batch is not merged again."""
    pipeline = Pipeline("staff", lease_seconds=0)
    commit = 4 if layout == "single" else 7
    pipeline.upload_baseline(BASELINE)
    pipeline.deliver()
    pipeline.stage(STAGED)
    (first,) = pipeline.receive_records()
    crashing = pipeline.faulty_service(crash_at=commit, after=True)  # right after the commit
    assert pipeline.invoke_with(crashing, [first]).failed == [first["MessageId"]]
    (redelivered,) = pipeline.receive_records()

    pipeline.stage([staff(5, 30)])
    assert pipeline.deliver().failed == []
    assert pipeline.invoke([redelivered]).failed == []

    history = pipeline.history_texts()
    assert max(history.values()) == 1
    assert len(history) == 4
    appended = [e["detail"] for e in pipeline.events() if e["detail-type"] == "HistoryAppended"]
    by_batch = {d["batch"]: d["counts"] for d in appended}
    assert len(by_batch) == 2
    assert {"inserted": 1, "updated": 2, "unchanged": 0, "late": 1, "history_rows": 4} in list(
        by_batch.values()
    )
    assert pipeline.staging_versions() == []


def test_a_merge_does_not_trust_the_history_of_one_that_crashed_before_its_commit(aws, layout):
    """A crashes after writing its history (which holds the row it replaces), B commits the
    same update, then A's retry finds nothing left to do and drops its history: the replaced
    row must still be in B's history (found by the reliability suite, seed 1 scenario 147)."""
    pipeline = Pipeline("staff", lease_seconds=0)
    pipeline.upload_baseline(BASELINE)
    pipeline.deliver()
    update = staff(1, 20, name="Jo")
    pipeline.stage([update])
    (first,) = pipeline.receive_records()

    class CrashAfterHistory(FaultyStore):
        def put(self, key, data, **kwargs):
            written = super().put(key, data, **kwargs)
            if key.startswith("history/"):
                raise RuntimeError("crashed after writing history")
            return written

    crashing = pipeline.faulty_service()
    crashing.store = CrashAfterHistory(BUCKET)
    crashing.publisher.store = crashing.store
    assert pipeline.invoke_with(crashing, [first]).failed == [first["MessageId"]]
    (redelivered,) = pipeline.receive_records()
    # the same update and an older version of that row (which makes it read history back)
    pipeline.stage([update, staff(1, 10, name="Mid")])
    assert pipeline.deliver().failed == []
    assert pipeline.invoke([redelivered]).failed == []

    history = pipeline.history_texts()
    assert history == Counter(
        {row_json(pipeline.spec, staff(1, 0)): 1, row_json(pipeline.spec, staff(1, 10, "Mid")): 1}
    )


def test_a_duplicate_notification_during_a_merge_backs_off_then_only_finishes(aws, layout):
    """Two copies of one notification at once: the second leaves the batch to the first."""
    pipeline = Pipeline("staff")  # the production lease
    pipeline.upload_baseline(BASELINE)
    pipeline.deliver()
    pipeline.stage(STAGED)
    (message,) = pipeline.receive_records()
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=message["Body"])
    (duplicate,) = pipeline.receive_records()
    twin_errors: list[BatchBusyError] = []

    class Slow(FaultyStore):
        def put(self, key, data, **kwargs):
            if key == pipeline.commit_key and not twin_errors:
                # the duplicate arrives while the first is about to commit
                with pytest.raises(BatchBusyError) as busy:
                    healthy.process(pipeline.ref(duplicate))
                twin_errors.append(busy.value)
            return super().put(key, data, **kwargs)

    healthy = pipeline.faulty_service()
    first = pipeline.faulty_service()
    first.store = Slow(BUCKET)
    assert pipeline.invoke_with(first, [message]).failed == []
    assert "another invocation is on this batch" in str(twin_errors[0])
    (claim,) = healthy.store.writes  # the twin wrote nothing: its claim was refused (412)
    assert claim.startswith("put _state/merge/staff/pending/")

    assert pipeline.invoke_with(healthy, [duplicate]).failed == []  # retried later
    assert healthy.store.writes == [claim]  # already done: nothing to redo
    assert max(pipeline.history_texts().values()) == 1
    assert len(pipeline.history_texts()) == 4
