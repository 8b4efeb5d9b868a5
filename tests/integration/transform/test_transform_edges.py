"""Events the transform ignores or refuses, truncated key lists, concurrent writers, the CLI."""

import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from ops.cli import app
from ops.sample_data import SampleDatabase
from services.transform import parquet
from services.transform.service import SourceChange, TransformService
from services.transform.warehouse import FACT_SALES_ORDER, sort_rows
from shared.reader import read_latest
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.transform_pipeline import BUCKET


def baselines(chain, seed=41, orders=12):
    database = SampleDatabase(seed=seed, orders=orders)
    for table, rows in database.snapshot().items():
        chain.merge(table, rows, baseline=True)
    chain.deliver()
    return database


def test_other_events_are_ignored_and_garbage_fails_its_record(chain):
    archived = {
        "source": "ingest.merge",
        "detail-type": "StagingArchived",
        "detail": {"table": "staff"},
    }
    foreign = {"source": "someone.else", "detail-type": "HistoryAppended", "detail": {}}
    assert chain.invoke([json.dumps(archived), json.dumps(foreign), "not json"]) == ["m2"]
    assert chain.files() == {}


def test_a_truncated_key_list_reads_all_of_latest(chain):
    baselines(chain)
    spec = TABLES["sales_order"]
    rows = read_latest(chain.store, spec).rows
    moved = [
        r.model_copy(
            update={
                "agreed_delivery_location_id": 2,
                "last_updated": r.last_updated + timedelta(hours=1),
            }
        )
        for r in rows[:3]
    ]
    outcome = chain.merge("sales_order", [m.model_dump() for m in moved])
    chain.receive()  # drop the routed event: apply it by hand with its key list cut short
    for key in chain.files():  # from an empty warehouse, to see what one event brings
        chain.store.delete(key)
    change = SourceChange(
        cause="HistoryAppended:sales_order:x",
        table="sales_order",
        batch=outcome.source.batch,
        history_key=outcome.history_key,
        keys=None,
    )
    report = chain.service.apply(change)
    # every row of latest (not only the 3 keys written) plus the 3 superseded versions
    assert report.tables["fact_sales_order"] == len(rows) + 3
    assert len(chain.table("fact_sales_order")) == len(rows) + 3


class RacingStore(BucketStore):
    """Another transform writes the same file between this one's read and its write, once."""

    def __init__(self, bucket, key_part):
        super().__init__(bucket)
        self.key_part = key_part
        self.raced = False

    def put(self, key, data, **kwargs):
        if not self.raced and self.key_part in key and kwargs.get("if_match"):
            self.raced = True  # the other transform adds a version of its own first
            rows = parquet.decode(FACT_SALES_ORDER, self.get(key).data)
            theirs = {**rows[0], "sales_record_id": 42, "units_sold": 999}
            super().put(
                key, parquet.encode(FACT_SALES_ORDER, sort_rows(FACT_SALES_ORDER, [*rows, theirs]))
            )
        return super().put(key, data, **kwargs)


def test_a_concurrent_write_makes_the_transform_redo_not_lose_it(chain):
    baselines(chain)
    (order,) = read_latest(chain.store, TABLES["sales_order"]).rows[:1]
    changed = order.model_copy(
        update={"units_sold": 1234, "last_updated": order.last_updated + timedelta(minutes=5)}
    )
    chain.merge("sales_order", [changed.model_dump()])
    (body,) = [m["Body"] for m in chain.receive()]
    racing = RacingStore(BUCKET, "fact_sales_order/created_month=")
    detail = json.loads(body)["detail"]
    from shared.events import HistoryAppended

    service = TransformService(racing)
    service.apply(SourceChange.from_event(HistoryAppended.model_validate(detail)))
    assert racing.raced
    versions = [r for r in chain.table("fact_sales_order") if r["sales_order_id"] == 1]
    original = order.model_dump()["units_sold"]
    assert sorted(r["units_sold"] for r in versions) == sorted([original, 999, 1234])


def test_ingestctl_transform_rebuild_restores_the_warehouse(chain):
    baselines(chain)
    before = chain.files()
    for key in before:
        chain.store.delete(key)
    result = CliRunner().invoke(app, ["--bucket", BUCKET, "transform", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "fact_sales_order:" in result.output
    assert chain.files() == before


class CrashAfterWrite(BucketStore):
    """Dies right after its first write of a Parquet file (before the manifest is updated)."""

    def put(self, key, data, **kwargs):
        result = super().put(key, data, **kwargs)
        if key.endswith(".parquet"):
            raise RuntimeError(f"crashed after writing {key}")
        return result


def test_a_retry_after_a_crash_finishes_the_manifest(chain):
    database = SampleDatabase(seed=43, orders=5)
    chain.merge("address", database.rows("address"), baseline=True)
    (body,) = [m["Body"] for m in chain.receive()]
    detail = json.loads(body)["detail"]
    from shared.events import BaselinePromoted

    change = SourceChange.from_event(BaselinePromoted.model_validate(detail))
    with pytest.raises(RuntimeError, match="crashed after writing"):
        TransformService(CrashAfterWrite(BUCKET)).apply(change)
    assert chain.table("dim_location") == []  # no manifest yet: the table is not visible
    assert chain.invoke([body]) == []  # the redelivery
    assert len(chain.table("dim_location")) == len(database.rows("address"))
