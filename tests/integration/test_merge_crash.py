"""A crash at any step boundary, then redelivery, ends exactly where an uninterrupted run does."""

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from moto import mock_aws

from ops.local.moto_edge import aws_like_moto
from services.merge import handler as merge_handler
from shared.commitlog import log_prefix
from shared.layout import batch_id, object_stamp
from shared.observation import observed_at_metadata
from shared.rows import dump_rows, row_json
from shared.tables import TABLES
from tests import rows
from tests.aws import AWS_ENV
from tests.integration.merge_pipeline import (
    BUCKET,
    LAYOUTS,
    Call,
    Pipeline,
    table_partitions,
)

T0 = rows.T0
# Before anything S3 stamps in a run: a file the ingest read then is observed before latest.
READ_EARLIER = observed_at_metadata(datetime(2020, 1, 1, tzinfo=UTC))


def staff(key, minutes, name="Jeremie"):
    return rows.staff(key, minutes, name, created=T0 - timedelta(days=1))


BASELINE = [staff(1, 0), staff(2, 0), staff(3, 0)]
# observed after the baseline: an update, a silent edit, an older last_updated (it still
# wins: versions are ordered by observation), an insert with an older in-file version
STAGED = [
    staff(1, 20, name="Jo"),
    staff(2, 0, name="Edited"),
    staff(3, -10, name="Older"),
    staff(4, 5),
    staff(4, 1, name="First"),
]
# read before the baseline was observed: every version goes to history, latest's rows stay
# (so a one-file latest keeps its bytes and its ETag)
LATE = [staff(1, 20, name="Jo"), staff(2, 0, name="Edited"), staff(3, -10, name="Older")]


BAD = b'[{"staff_id": 1, "first_name": "no other columns"}]'
SCENARIOS = {
    "merge": (STAGED, None),
    "late": (LATE, READ_EARLIER),
    "empty": (b"[]", None),
    "rejected": (BAD, None),
}


def run(scenario="merge", crash_at=None, after=False, layout="single"):
    """Baseline, then one staging file applied (crashing at its Nth write), then redelivery."""
    staged, metadata = SCENARIOS[scenario]
    with mock_aws(), aws_like_moto(), table_partitions("staff", LAYOUTS[layout]):
        pipeline = Pipeline("staff")
        base = pipeline.upload_baseline(BASELINE)
        assert pipeline.deliver().failed == []
        put = pipeline.stage(staged, metadata=metadata)
        batch = batch_id(put["VersionId"], None)
        head = pipeline.s3.head_object(
            Bucket=BUCKET, Key="staging/staff.json", VersionId=put["VersionId"]
        )
        names = {
            batch: "<batch>",
            batch_id(base["VersionId"], None): "<baseline>",
            put["VersionId"]: "<version>",
            object_stamp(head["LastModified"]): "<stamp>",
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

    def norm_key(key):
        # a partition is named by a digest of its bytes, whose rows carry their observation
        # (this run's S3 event time and sequencer): the same rows give the same name in a run
        return re.sub(r"_[0-9a-f]{12}\.json(\.gz)?$", r"_<digest>.json\1", norm(key))

    history = Counter(
        (row_json(pipeline.spec, h.row), h.superseded_at, norm(h.batch)) for h in pipeline.history()
    )
    events = pipeline.events()
    return {
        "latest": pipeline.latest_bytes(),
        "latest_objects": [norm_key(key) for key in pipeline.keys("latest/")],
        "latest_metadata": {k: norm(v or "") for k, v in pipeline.latest_metadata().items()},
        "log": len(pipeline.log_entries()),
        "history": history,
        "history_objects": len(pipeline.keys("history/")),
        # (sorted by content: archive keys start with a stamp to the second, then the batch)
        "archives": sorted(pipeline.get(key) for key in pipeline.archives()),
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
            (layout, scenario): run(scenario, layout=layout)
            for scenario in SCENARIOS
            for layout in LAYOUTS
        }


# What a merge writes, in order (the notification names its version, as AWS's do). Events go
# out before the source version is deleted: a version that is gone means a finished batch.
EXPECTED_WRITES = {
    ("single", "merge"): [
        "put _state/log/staff/",  # the log entry: the commit (create-only)
        "put history/staff/",  # copied from the entry
        "put latest/staff.json",  # copied from the entry (If-Match on what was read)
        "put archive/staff/",
        "publish",
        "delete staging/staff.json",  # exactly the staging version
    ],
    ("partitioned", "merge"): [
        "put latest/staff/000000000000-000000000001",  # the three partitions STAGED touches
        "put latest/staff/000000000002-000000000003",  # (invisible until an entry names them)
        "put latest/staff/000000000004-000000000005",
        "put _state/log/staff/",  # the commit
        "put history/staff/",
        "put latest/staff/_manifest.json",  # the copy of the entry's manifest
        "delete latest/staff/",  # the two partitions replaced, in one request
        "put archive/staff/",
        "publish",
        "delete staging/staff.json",
    ],
    # history only: no partition is rewritten, latest still says which entry it reflects
    ("single", "late"): [
        "put _state/log/staff/",
        "put history/staff/",
        "put latest/staff.json",
        "put archive/staff/",
        "publish",
        "delete staging/staff.json",
    ],
    ("partitioned", "late"): [
        "put _state/log/staff/",
        "put history/staff/",
        "put latest/staff/_manifest.json",
        "put archive/staff/",
        "publish",
        "delete staging/staff.json",
    ],
    ("single", "empty"): ["publish", "delete staging/staff.json"],
    ("single", "rejected"): [
        "put quarantine/staff/",  # the copy
        "put quarantine/staff/",  # its report
        "send",  # the DLQ (before the record: a crash between can only send twice)
        "put _state/merge/staff/quarantined/",  # the record a redrive finds the copy by
        "publish",
        "delete staging/staff.json",
    ],
}


def _assert_writes(writes, expected):
    assert len(writes) == len(expected), writes
    for write, prefix in zip(writes, expected, strict=True):
        assert write.startswith(prefix), (write, prefix)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_uninterrupted_run_is_the_expected_merge(aws_env, uninterrupted, layout):
    crashed, writes, expected = uninterrupted[layout, "merge"]
    assert not crashed
    _assert_writes(writes, EXPECTED_WRITES[layout, "merge"])
    if layout == "partitioned":
        assert writes[6].count("latest/staff/") == 2
        assert len(expected["latest_objects"]) == 4  # three partitions and the manifest
    assert set(expected["history"]) == {
        (row_json(TABLES["staff"], r), at, "<batch>")
        for r, at in [
            (staff(1, 0), staff(1, 20).last_updated),
            (staff(2, 0), staff(2, 0).last_updated),
            (staff(3, 0), staff(3, -10).last_updated),
            (staff(4, 1, name="First"), staff(4, 5).last_updated),
        ]
    }
    assert expected["log"] == 2  # the baseline's entry and this batch's
    assert expected["latest_metadata"] == {"merge-seq": "2", "merge-batch": "<batch>"}
    assert len(expected["archives"]) == 2  # the baseline is archived too


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_uninterrupted_late_run_keeps_latest_and_records_every_version(
    aws_env, uninterrupted, layout
):
    crashed, writes, late = uninterrupted[layout, "late"]
    assert not crashed
    _assert_writes(writes, EXPECTED_WRITES[layout, "late"])
    assert late["latest"] == dump_rows(TABLES["staff"], BASELINE)
    assert set(late["history"]) == {
        (row_json(TABLES["staff"], r), base.last_updated, "<batch>")
        for r, base in zip(LATE, BASELINE, strict=True)
    }
    assert late["latest_metadata"] == {"merge-seq": "2", "merge-batch": "<batch>"}


def test_the_uninterrupted_empty_and_rejected_runs(aws_env, uninterrupted):
    _, writes, empty = uninterrupted["single", "empty"]
    _assert_writes(writes, EXPECTED_WRITES["single", "empty"])
    assert empty["archives"] == [dump_rows(TABLES["staff"], BASELINE)]
    assert not empty["history"]
    assert empty["log"] == 1
    assert empty["event_ids"] == {"StagingEmpty:staff:<batch>"}
    _, writes, rejected = uninterrupted["single", "rejected"]
    _assert_writes(writes, EXPECTED_WRITES["single", "rejected"])
    assert len(rejected["quarantine"]) == 2
    assert rejected["dead_letters"] == 1
    assert rejected["event_ids"] == {"StagingRejected:staff:<batch>"}
    assert rejected["latest"] == empty["latest"]
    assert rejected["log"] == 1


# Each write of each scenario. An empty or rejected file never reaches latest, so its crashes
# are tested in one layout.
CRASHES = [
    (layout, scenario, crash_at)
    for (layout, scenario), writes in sorted(EXPECTED_WRITES.items())
    for crash_at in range(1, len(writes) + 1)
]


@pytest.mark.parametrize("after", [False, True], ids=["before-write", "after-write"])
@pytest.mark.parametrize(("layout", "scenario", "crash_at"), CRASHES)
def test_crash_then_redelivery_matches_the_uninterrupted_run(
    aws_env, uninterrupted, layout, scenario, crash_at, after
):
    _, writes, expected = uninterrupted[layout, scenario]
    crashed, _, got = run(scenario, crash_at=crash_at, after=after, layout=layout)
    assert crashed, f"no crash at write {crash_at}: {writes}"
    assert got == expected, f"crash {'after' if after else 'before'} {writes[crash_at - 1]}"
    assert max(got["history"].values(), default=1) == 1
    merge_handler.use_service(None)


def test_crash_after_the_commit_then_another_batch_then_redelivery(aws, layout):
    """The commit is found in the log (the other batch copied it), so the batch is not merged
    again and its events carry its own entry's counts."""
    pipeline = Pipeline("staff")
    pipeline.upload_baseline(BASELINE)
    pipeline.deliver()
    pipeline.stage(STAGED)
    (first,) = pipeline.receive_records()
    crashing, hooks = pipeline.hooked_service()
    hooks.after("PutObject", log_prefix("staff"))  # dies right after its commit
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
    assert {
        "inserted": 1,
        "updated": 3,
        "unchanged": 0,
        "late": 0,
        "deleted": 0,
        "history_rows": 4,
        "history_deleted": 0,
    } in list(by_batch.values())
    assert pipeline.staging_versions() == []
    assert len(pipeline.log_entries()) == 3
    assert pipeline.latest_metadata()["merge-seq"] == "3"


def test_a_merge_that_crashed_just_before_its_commit_leaves_nothing_anyone_trusts(aws, layout):
    """A dies just before creating its log entry (partitioned: after writing its partition
    objects), B commits the same update and an older version of that row (which makes it read
    history back), then A's retry finds nothing left to do: each version once."""
    pipeline = Pipeline("staff")
    pipeline.upload_baseline(BASELINE)
    pipeline.deliver()
    update = staff(1, 20, name="Jo")
    pipeline.stage([update])
    (first,) = pipeline.receive_records()
    crashing, hooks = pipeline.hooked_service()
    hooks.before("PutObject", log_prefix("staff"))
    assert pipeline.invoke_with(crashing, [first]).failed == [first["MessageId"]]
    (redelivered,) = pipeline.receive_records()
    pipeline.stage([update, staff(1, 10, name="Mid")])
    assert pipeline.deliver().failed == []
    assert pipeline.invoke([redelivered]).failed == []

    assert pipeline.latest_texts() == [row_json(pipeline.spec, r) for r in [update, *BASELINE[1:]]]
    history = pipeline.history_texts()
    assert history == Counter(
        {row_json(pipeline.spec, staff(1, 0)): 1, row_json(pipeline.spec, staff(1, 10, "Mid")): 1}
    )
    assert pipeline.staging_versions() == []


# Where the first delivery is when its duplicate runs whole: just before its commit, or
# between its commit and its copy to latest.
PAUSES = ["before-commit", "before-copy"]


@pytest.mark.parametrize("pause", PAUSES)
@pytest.mark.parametrize("scenario", ["merge", "late"])
def test_a_duplicate_delivery_while_the_batch_is_in_progress_is_harmless(
    aws, layout, scenario, pause
):
    """Two copies of one notification at once (SQS delivers at least once): the duplicate
    runs whole while the first is paused; the batch is committed once, every version once
    (late versions too: history-only commits of one batch leave latest's bytes unchanged)."""
    staged, metadata = SCENARIOS[scenario]
    pipeline = Pipeline("staff")
    pipeline.upload_baseline(BASELINE)
    pipeline.deliver()
    pipeline.stage(staged, metadata=metadata)
    (message,) = pipeline.receive_records()
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=message["Body"])
    (duplicate,) = pipeline.receive_records()
    twin = merge_handler.build_service(pipeline.settings)
    first, hooks = pipeline.hooked_service()
    ran: list[Call] = []

    def run_the_duplicate(call: Call) -> None:
        ran.append(call)
        twin.process(pipeline.ref(duplicate))

    at = log_prefix("staff") if pause == "before-commit" else pipeline.commit_key
    hooks.before("PutObject", at, run_the_duplicate)
    assert pipeline.invoke_with(first, [message]).failed == []
    assert len(ran) == 1
    assert pipeline.invoke([duplicate]).failed == []  # delivered again later: finished

    history = pipeline.history_texts()
    assert max(history.values()) == 1
    assert len(history) == (4 if scenario == "merge" else 3)
    assert len(pipeline.log_entries()) == 2
    assert pipeline.latest_metadata()["merge-seq"] == "2"
    assert len(pipeline.archives()) == 2
    assert pipeline.staging_versions() == []
    ids = pipeline.event_ids()
    batch = batch_id(json.loads(message["Body"])["Records"][0]["s3"]["object"]["versionId"], None)
    assert {i for i in ids if batch in i} == {
        f"HistoryAppended:staff:{batch}",
        f"StagingArchived:staff:{batch}",
    }
