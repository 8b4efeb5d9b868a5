"""Log-mode files through the real handler on moto: every version, every delete, the handoff.

Files are shaped as the log-capture ingest writes them (`tests.rows.logged`: `_op`,
`_commit_ts`, `_lsn`, `_xid`, `_toast_unchanged`); each test runs with latest as one file and
as narrow partitions (the `layout` fixture).
"""

import json
from collections import Counter
from datetime import timedelta

import pytest

from ops.inspection import row_history, table_as_of
from services.transform.deletes import deleted_rows
from shared.changes import DELETED_AT_COLUMN, OP_COLUMN
from shared.deployment_facts import MAX_RECEIVE_COUNT
from shared.observation import observed_at_metadata
from shared.reader import read_tombstones
from shared.storage import BucketStore
from tests.integration.merge_pipeline import BUCKET
from tests.integration.test_merge_flow import MERGED, by_type, in_upload_order
from tests.rows import T0, log_file, logged, staff


def read_at(minutes):
    """The metadata of a file the ingest read at T0 + minutes (the database's clock)."""
    return observed_at_metadata(T0 + timedelta(minutes=minutes))


def names(pipeline):
    return {r.staff_id: r.first_name for r in pipeline.latest_rows()}


def history(pipeline):
    """(name, op, deleted) of every history row, counted."""
    return Counter(
        (h.row.first_name, h.change.op.value if h.change else None, h.deleted)
        for h in pipeline.history()
    )


def stored_lines(pipeline):
    """latest's lines as stored (rows and tombstones), whichever layout holds them."""
    lines = []
    for key in pipeline.keys("latest/"):
        if not key.endswith("_manifest.json"):
            lines += pipeline.raw_rows(key)
    return lines


CHANGES = [
    logged(staff(1, 40, name="B"), "update", 40, 1),
    logged(staff(1, 41, name="C"), "update", 41, 2),
    logged(2, "delete", 42, 3),
    logged(3, "delete", 43, 4),
    logged(staff(3, 44, name="Q2"), "insert", 44, 5),
    logged(staff(4, 45, name="N"), "insert", 45, 6),
]


def test_every_version_and_delete_of_a_log_file_reaches_latest_and_history(pipeline):
    pipeline.upload_baseline(
        [staff(1, 0, name="A"), staff(2, 0, name="Z"), staff(3, 0, name="Q")], read_at(30)
    )
    assert pipeline.deliver().failed == []
    pipeline.stage(log_file(CHANGES), read_at(50))
    assert pipeline.deliver().failed == []

    assert names(pipeline) == {1: "C", 3: "Q2", 4: "N"}
    assert history(pipeline) == Counter(
        {
            ("A", "insert", False): 1,  # polled: inferred (new key)
            ("B", "update", False): 1,  # both updates of key 1: two versions
            ("Z", "insert", True): 1,  # deleted: its row, marked
            ("Q", "insert", True): 1,  # deleted, then re-inserted
        }
    )
    (gone,) = [h for h in pipeline.history() if h.row.first_name == "Z"]
    assert gone.deleted_at == T0 + timedelta(minutes=42)
    # latest's rows carry the change that made them; the deleted key is a tombstone line,
    # which no reader sees
    lines = {line["staff_id"]: line for line in stored_lines(pipeline)}
    assert lines[1][OP_COLUMN] == "update"
    assert lines[1]["_lsn"] == "16/B3740002"
    assert set(lines[2]) >= {DELETED_AT_COLUMN, "_observed"}
    assert "first_name" not in lines[2]
    events = by_type(pipeline.events())
    appended = events["HistoryAppended"][-1]
    assert appended["keys_deleted"] == [2]
    assert appended["counts"]["deleted"] == 1
    assert appended["counts"]["history_deleted"] == 2
    assert appended["counts"]["history_rows"] == 4


def test_a_log_file_redelivered_replayed_or_staged_again_changes_nothing(pipeline):
    pipeline.upload_baseline([staff(1, 0, name="A"), staff(2, 0, name="Z")], read_at(30))
    pipeline.deliver()
    pipeline.stage(log_file(CHANGES), read_at(50))
    (message,) = pipeline.receive_records()
    pipeline.invoke([message])
    before, ids = pipeline.all_object_versions(MERGED), pipeline.event_ids()
    kept = (names(pipeline), history(pipeline))

    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=message["Body"])
    assert pipeline.deliver().failed == []  # a redelivery
    archived = by_type(pipeline.events())["StagingArchived"][-1]["archive_key"]
    pipeline.replay(archived)
    assert pipeline.deliver().failed == []  # a replay
    assert pipeline.all_object_versions(MERGED) == before
    assert set(pipeline.event_ids()) == set(ids)

    # the ingest re-peeks after a crash: the same changes staged again, as a new batch
    pipeline.stage(log_file(CHANGES), read_at(51))
    assert pipeline.deliver().failed == []
    assert (names(pipeline), history(pipeline)) == kept


def test_delete_and_reinsert_across_files_and_a_late_tombstone(pipeline):
    pipeline.stage(log_file([logged(staff(1, 1, name="A"), "insert", 1, 1)]))
    pipeline.deliver()
    pipeline.stage(log_file([logged(1, "delete", 2, 2)]))
    pipeline.deliver()
    assert names(pipeline) == {}
    pipeline.stage(log_file([logged(staff(1, 3, name="B"), "insert", 3, 3)]))
    pipeline.deliver()
    assert names(pipeline) == {1: "B"}  # a re-insert: a new version
    assert history(pipeline) == Counter({("A", "insert", True): 1})

    # a delete committed before B's insert, delivered after it (a late or redriven file)
    before = pipeline.all_object_versions(("latest/", "history/"))
    pipeline.stage(log_file([logged(1, "delete", 2, 2)]))
    assert pipeline.deliver().failed == []
    assert names(pipeline) == {1: "B"}
    assert pipeline.all_object_versions(("latest/", "history/")) == before


def test_an_insert_delivered_after_its_later_delete_stays_out_of_latest(pipeline):
    pipeline.stage(log_file([logged(staff(5, 1, name="Early"), "insert", 1, 1)]))
    pipeline.stage(log_file([logged(5, "delete", 2, 2)]))
    late, first = in_upload_order(pipeline.receive_records())  # delivered in reverse
    assert pipeline.invoke([first]).failed == []
    assert pipeline.invoke([late]).failed == []
    assert names(pipeline) == {}
    assert history(pipeline) == Counter({("Early", "insert", False): 1})


@pytest.mark.parametrize("order", ["baseline first", "log first"])
def test_the_handoff_baseline_then_log_keeps_each_version_once(pipeline, order):
    """The slot is created, then the baseline read at minute 30; the first log file holds
    changes committed before that read (which the baseline saw too) and after it."""
    baseline = [staff(1, 12, name="A2"), staff(2, 0, name="Z")]
    changes = [
        logged(staff(1, 10, name="A1"), "insert", 10, 1),
        logged(staff(1, 12, name="A2"), "update", 12, 2),
        logged(staff(3, 20, name="X"), "insert", 20, 3),
        logged(3, "delete", 25, 4),
        logged(staff(1, 40, name="A3"), "update", 40, 5),
        logged(2, "delete", 45, 6),
    ]
    if order == "baseline first":
        pipeline.upload_baseline(baseline, read_at(30))
        pipeline.deliver()
        pipeline.stage(log_file(changes), read_at(50))
    else:
        pipeline.stage(log_file(changes), read_at(50))
        pipeline.deliver()
        pipeline.upload_baseline(baseline, read_at(30))
    assert pipeline.deliver().failed == []
    assert names(pipeline) == {1: "A3"}
    found = history(pipeline)
    assert Counter(name for name, _, _ in found.elements()) == Counter(
        {"A1": 1, "A2": 1, "X": 1, "Z": 1}
    )
    assert ("X", "insert", True) in found
    if order == "baseline first":  # in order, the delete of Z marks it
        assert ("Z", "insert", True) in found


def test_unchanged_toast_values_are_filled_from_latest(pipeline):
    pipeline.upload_baseline([staff(1, 0, name="A")], read_at(30))
    pipeline.deliver()
    edited = staff(1, 40, name="A").model_copy(update={"last_name": "Renamed"})
    pipeline.stage(log_file([logged(edited, "update", 40, 1, toast=("email_address",))]))
    assert pipeline.deliver().failed == []
    assert pipeline.latest_rows() == [edited]


def test_unchanged_toast_values_with_no_previous_version_are_retried_then_quarantined(pipeline):
    pipeline.stage(log_file([logged(staff(9, 40), "update", 40, 1, toast=("email_address",))]))
    for _ in range(MAX_RECEIVE_COUNT - 1):  # an earlier file may still be on its way: retried
        messages = pipeline.receive_records()
        assert pipeline.invoke(messages).failed == [messages[0]["MessageId"]]
        assert pipeline.quarantined() == []
    messages = pipeline.receive_records()
    assert messages[0]["Attributes"]["ApproximateReceiveCount"] == str(MAX_RECEIVE_COUNT)
    assert pipeline.invoke(messages).failed == []  # its last delivery: quarantined
    assert pipeline.latest_rows() == []
    _, report_key = pipeline.quarantined()
    (problem,) = json.loads(pipeline.get(report_key))["problems"]
    assert (problem["source"], problem["primary_key"], problem["field"]) == (
        "staging/staff.json",
        9,
        "email_address",
    )
    assert "no previous version" in problem["message"]
    assert pipeline.dlq_bodies() == [messages[0]["Body"]]


def test_a_toast_update_delivered_before_the_file_it_needs_merges_when_retried(pipeline):
    earlier = pipeline.stage(log_file([logged(staff(9, 30, name="A"), "insert", 30, 1)]))
    pipeline.stage(
        log_file([logged(staff(9, 40, name="B"), "update", 40, 2, toast=("email_address",))])
    )
    messages = pipeline.receive_records()
    first, second = sorted(messages, key=lambda m: earlier["VersionId"] in m["Body"])
    assert pipeline.invoke([first]).failed == [first["MessageId"]]  # the later file first
    assert pipeline.invoke([second]).failed == []
    assert pipeline.deliver().failed == []  # the retry: the earlier version is there now
    (row,) = pipeline.latest_rows()
    assert (row.first_name, row.email_address) == ("B", staff(9, 30).email_address)
    assert [h.row.first_name for h in pipeline.history()] == ["A"]
    assert pipeline.quarantined() == []
    assert pipeline.dlq_bodies() == []


def test_history_and_asof_show_operations_and_deletes(pipeline):
    pipeline.stage(log_file([logged(staff(1, 1, name="A"), "insert", 1, 1)]))
    pipeline.deliver()
    pipeline.stage(
        log_file([logged(staff(1, 2, name="B"), "update", 2, 2), logged(1, "delete", 3, 3)])
    )
    pipeline.deliver()
    pipeline.stage(log_file([logged(staff(1, 5, name="C"), "insert", 5, 4)]))
    pipeline.deliver()
    store, spec = BucketStore(BUCKET, pipeline.s3), pipeline.spec
    versions = row_history(store, spec, 1)
    assert [(v.row["first_name"], v.op) for v in versions] == [
        ("A", "insert"),
        ("B", "update"),
        ("C", "insert"),
    ]
    deleted = versions[1]
    assert deleted.deleted_at == T0 + timedelta(minutes=3)
    assert deleted.valid_to == T0 + timedelta(minutes=3)
    assert versions[2].valid_to is None

    def names_at(minutes):
        data = table_as_of(store, spec, T0 + timedelta(minutes=minutes))
        return [r["first_name"] for r in json.loads(data)]

    assert names_at(2.5) == ["B"]
    assert names_at(4) == []  # deleted by then
    assert names_at(6) == ["C"]


def test_a_polled_inferred_delete_is_a_tombstone_observed_with_its_file(pipeline):
    pipeline.upload_baseline([staff(1, 0, name="A"), staff(2, 0, name="Z")], read_at(30))
    pipeline.deliver()
    at = (T0 + timedelta(minutes=60)).isoformat(timespec="microseconds")
    inferred = b'[\n{"staff_id":2,"_op":"delete","_commit_ts":"' + at.encode() + b'"}\n]\n'
    pipeline.stage(inferred, read_at(60))
    assert pipeline.deliver().failed == []
    assert names(pipeline) == {1: "A"}
    assert history(pipeline) == Counter({("Z", "insert", True): 1})
    # a polled file read before the delete, delivered after it, does not bring Z back
    pipeline.stage([staff(2, 0, name="Z"), staff(1, 50, name="A2")], read_at(50))
    assert pipeline.deliver().failed == []
    assert names(pipeline) == {1: "A2"}
    assert history(pipeline) == Counter({("Z", "insert", True): 1, ("A", "insert", False): 1})


@pytest.mark.parametrize("again", ["the same delete", "another delete"])
def test_a_key_deleted_again_keeps_the_tombstone_naming_the_batch_that_holds_its_row(
    pipeline, again
):
    """A delete of a key already deleted writes no history row; latest's tombstone must still
    name the batch whose history object holds the deleted row (the transform reads only it)."""
    pipeline.upload_baseline([staff(1, 0, name="A"), staff(2, 0, name="Z")], read_at(30))
    assert pipeline.deliver().failed == []
    pipeline.stage(log_file([logged(2, "delete", 42, 3)]), read_at(50))
    assert pipeline.deliver().failed == []
    repeat = logged(2, "delete", *((42, 3) if again == "the same delete" else (55, 9)))
    pipeline.stage(log_file([repeat]), read_at(60))
    assert pipeline.deliver().failed == []

    store = BucketStore(BUCKET, pipeline.s3)
    (tomb,) = read_tombstones(store, pipeline.spec)
    (gone,) = [h for h in pipeline.history() if h.deleted]
    assert (tomb.key, tomb.batch, tomb.deleted_at) == (2, gone.batch, gone.deleted_at)
    deleted = deleted_rows(store, pipeline.spec)
    assert {k: (d.row.model_dump()["first_name"], d.at) for k, d in deleted.items()} == {
        2: ("Z", T0 + timedelta(minutes=42))
    }
