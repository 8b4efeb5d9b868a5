"""A column the source gained, through the real merge handler on moto, under each schema policy
(`TableSpec.schema_policy`), with latest as one file and as narrow partitions."""

import json
from datetime import timedelta

import pytest

from ops.inspection import row_history, table_as_of
from shared.observation import observed_at_metadata
from shared.quarantine import REPORT_SUFFIX
from shared.reader import read_latest
from shared.rows import row_json
from shared.schema_state import TableSchema, effective_spec, schema_key
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.merge_pipeline import BUCKET, registry_entry
from tests.integration.test_merge_flow import by_type
from tests.rows import T0, log_file, logged, staff

SPEC = TABLES["staff"]


def read_at(minutes):
    return observed_at_metadata(T0 + timedelta(minutes=minutes))


def with_nickname(row, nickname):
    """The row as the source sends it once it has a `nickname` column."""
    return json.loads(row_json(SPEC, row)) | {"nickname": nickname}


def staged(rows):
    return json.dumps(rows).encode()


def nicknames(pipeline):
    return {r.staff_id: r.model_dump()["nickname"] for r in pipeline.latest_rows()}


def drift_events(pipeline):
    return by_type(pipeline.events()).get("SchemaDrift", [])


@pytest.fixture
def add_nullable(layout):
    with registry_entry("staff", schema_policy="add_nullable"):
        yield


def test_add_nullable_adds_the_column_and_rows_from_before_it_read_null(pipeline, add_nullable):
    pipeline.upload_baseline([staff(1, 0), staff(2, 0, name="Zed")], read_at(10))
    assert pipeline.deliver().failed == []
    rows = [with_nickname(staff(2, 20, name="Zoe"), "Z"), with_nickname(staff(3, 20), None)]
    pipeline.stage(staged(rows), read_at(30))
    assert pipeline.deliver().failed == []

    assert pipeline.quarantined() == []
    assert pipeline.dlq_bodies() == []
    assert nicknames(pipeline) == {1: None, 2: "Z", 3: None}  # key 1: staged before the column
    (old,) = pipeline.history()
    assert (old.row.model_dump()["first_name"], old.row.model_dump()["nickname"]) == ("Zed", None)
    schema = TableSchema.model_validate_json(pipeline.get(schema_key("staff")))
    ((column, batch),) = [(c.name, c.batch) for c in schema.added]
    (event,) = drift_events(pipeline)
    assert (column, event["batch"]) == ("nickname", batch)
    assert (event["columns"], event["policy"], event["action"]) == (
        ["nickname"],
        "add_nullable",
        "added",
    )
    # later files, with the column or without it (a file staged before the source changed)
    pipeline.stage(staged([with_nickname(staff(1, 40), "One")]), read_at(50))
    pipeline.stage(pipeline.rows_bytes([staff(4, 45)]), read_at(55))
    assert pipeline.deliver().failed == []
    assert nicknames(pipeline) == {1: "One", 2: "Z", 3: None, 4: None}
    assert len(drift_events(pipeline)) == 1  # a known column is no drift


def test_add_nullable_readers_see_the_column_in_history_and_as_of(pipeline, add_nullable):
    pipeline.upload_baseline([staff(1, 0)], read_at(10))
    pipeline.stage(staged([with_nickname(staff(1, 20, name="B"), "Bee")]), read_at(30))
    assert pipeline.deliver().failed == []
    store = BucketStore(BUCKET, pipeline.s3)
    spec = effective_spec(store, TABLES["staff"])
    timeline = [(v.row["first_name"], v.row["nickname"]) for v in row_history(store, spec, 1)]
    assert timeline == [("Jeremie", None), ("B", "Bee")]
    before = table_as_of(store, spec, T0 + timedelta(minutes=15))
    assert [json.loads(line)["nickname"] for line in before.decode().splitlines()[1:-1]] == [None]


def test_add_nullable_is_idempotent_a_replay_changes_nothing(pipeline, add_nullable):
    pipeline.upload_baseline([staff(1, 0)], read_at(10))
    pipeline.stage(staged([with_nickname(staff(1, 20), "J")]), read_at(30))
    assert pipeline.deliver().failed == []
    latest, history = pipeline.latest_texts(), pipeline.history_texts()
    pipeline.replay(pipeline.archives()[-1])  # the staged file's (the baseline's is first)
    assert pipeline.deliver().failed == []
    assert (pipeline.latest_texts(), pipeline.history_texts()) == (latest, history)
    schema = TableSchema.model_validate_json(pipeline.get(schema_key("staff")))
    assert [c.name for c in schema.added] == ["nickname"]


def test_add_nullable_in_log_mode_a_column_added_between_two_changes(pipeline, add_nullable):
    pipeline.upload_baseline([staff(1, 0)], read_at(10))
    first = logged(staff(1, 20, name="A"), "update", 20, 1)
    second = logged(staff(1, 25, name="B"), "update", 25, 2) | {"nickname": "Bee"}
    pipeline.stage(log_file([first, second]), read_at(30))
    assert pipeline.deliver().failed == []
    assert nicknames(pipeline) == {1: "Bee"}
    assert sorted(
        (h.row.first_name, h.row.model_dump()["nickname"]) for h in pipeline.history()
    ) == [
        ("A", None),
        ("Jeremie", None),
    ]


def test_add_nullable_still_quarantines_a_column_it_cannot_add_or_a_value_it_cannot_hold(
    pipeline, add_nullable
):
    pipeline.upload_baseline([staff(1, 0)], read_at(10))
    assert pipeline.deliver().failed == []
    before = pipeline.latest_texts()
    bad = [with_nickname(staff(1, 20), {"nested": 1}), json.loads(row_json(SPEC, staff(2, 20)))]
    bad[1]["Odd Name"] = 1
    pipeline.stage(staged(bad), read_at(30))
    assert pipeline.deliver().failed == []
    _, report_key = pipeline.quarantined()
    assert report_key.endswith(REPORT_SUFFIX)
    report = json.loads(pipeline.get(report_key))
    assert report["drift"] == ["nickname", "Odd Name"]
    fields = {(p["row_index"], p["field"]) for p in report["problems"]}
    assert fields == {(0, "nickname"), (1, "Odd Name")}
    messages = {p["field"]: p["message"] for p in report["problems"]}
    assert "an added column holds text, a number" in messages["nickname"]
    assert messages["Odd Name"] == "unknown column (not in the table's schema)"
    assert pipeline.latest_texts() == before
    assert pipeline.keys(schema_key("staff")) == []  # nothing recorded for a stopped batch
    (event,) = drift_events(pipeline)
    assert event["action"] == "stopped"


def test_stop_quarantines_names_the_drift_and_a_redrive_under_add_nullable_merges(pipeline):
    assert TABLES["staff"].schema_policy == "stop"  # the default
    pipeline.upload_baseline([staff(1, 0)], read_at(10))
    assert pipeline.deliver().failed == []
    pipeline.stage(staged([with_nickname(staff(1, 20, name="B"), "Bee")]), read_at(30))
    assert pipeline.deliver().failed == []

    _, report_key = pipeline.quarantined()
    report = json.loads(pipeline.get(report_key))
    assert report["drift"] == ["nickname"]
    assert [(p["field"], p["message"]) for p in report["problems"]] == [
        ("nickname", "unknown column (not in the table's schema)")
    ]
    (event,) = drift_events(pipeline)
    assert (event["policy"], event["action"], event["columns"]) == ("stop", "stopped", ["nickname"])
    assert "StagingRejected" in by_type(pipeline.events())
    assert nicknames_absent(pipeline)
    (dlq_body,) = pipeline.dlq_bodies()

    # the operator turns the policy to add_nullable (a deploy), then redrives
    with registry_entry("staff", schema_policy="add_nullable"):
        pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=dlq_body)
        assert pipeline.deliver().failed == []
        assert pipeline.quarantined() == []
        assert nicknames(pipeline) == {1: "Bee"}
        assert [e["action"] for e in drift_events(pipeline)] == ["stopped", "added"]


def nicknames_absent(pipeline):
    rows = read_latest(BucketStore(BUCKET, pipeline.s3), TABLES["staff"]).rows
    return all("nickname" not in r.model_dump() for r in rows)
