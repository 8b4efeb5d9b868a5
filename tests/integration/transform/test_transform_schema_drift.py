"""A column the source added (policy add_nullable) through the real merge and the transform:
the warehouse keeps its own columns, and events on the drifted tables still build it."""

import json
from datetime import UTC, datetime, timedelta

from ops.sample_data import SampleDatabase
from services.merge.service import MergeService
from services.merge.settings import MergeSettings
from services.merge.source import ObjectRef
from shared.events import EventPublisher
from shared.layout import staging_key
from shared.observation import observed_at_metadata
from shared.queues import MessageQueue
from shared.reader import read_latest
from shared.rows import dump_lines, row_json
from shared.schema_state import effective_spec
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.merge_pipeline import registry_entry
from tests.integration.transform_pipeline import BUCKET, BUS


def merge_lines(chain, table, lines):
    """Stage raw lines (the rows hold a column the registry does not name) and merge them."""
    put = chain.s3.put_object(
        Bucket=BUCKET,
        Key=staging_key(table),
        Body=dump_lines(lines),
        Metadata=observed_at_metadata(datetime.now(UTC)),
    )
    settings = MergeSettings(
        bucket_name=BUCKET, table_name=table, event_bus_name=BUS, dlq_url=chain.dlq_url
    )
    service = MergeService(
        settings, BucketStore(BUCKET), EventPublisher(BUS), MessageQueue(chain.dlq_url)
    )
    outcome = service.process(ObjectRef(BUCKET, staging_key(table), put.get("VersionId"), "{}"))
    assert outcome is not None
    assert outcome.status.value == "committed", outcome


def with_column(table, row, **added):
    line = json.loads(row_json(TABLES[table], row)) | added
    line["last_updated"] = (row.last_updated + timedelta(days=1)).isoformat()
    return json.dumps(line)


def test_events_on_tables_with_added_columns_build_the_warehouse_and_a_rebuild_agrees(chain):
    for table, rows in SampleDatabase(seed=41, orders=6).snapshot().items():
        chain.merge(table, rows, baseline=True)
    chain.deliver()
    member = read_latest(chain.store, TABLES["staff"]).rows[0]
    order = read_latest(chain.store, TABLES["sales_order"]).rows[0]
    member_id, units = member.model_dump()["staff_id"], order.model_dump()["units_sold"]
    facts_before = len(chain.table("fact_sales_order"))
    with (
        registry_entry("staff", schema_policy="add_nullable"),
        registry_entry("sales_order", schema_policy="add_nullable"),
    ):
        renamed = member.model_copy(update={"first_name": "Renamed"})
        merge_lines(chain, "staff", [with_column("staff", renamed, nickname="Ren")])
        more = order.model_copy(update={"units_sold": units + 1})
        merge_lines(chain, "sales_order", [with_column("sales_order", more, channel="web")])
        chain.deliver()  # every event handled (deliver asserts no failures)

        spec = effective_spec(chain.store, TABLES["staff"])
        assert [r.model_dump()["nickname"] for r in read_latest(chain.store, spec).rows][:1] == [
            "Ren"
        ]
        dim = {r["staff_id"]: r for r in chain.table("dim_staff")}
        assert dim[member_id]["first_name"] == "Renamed"
        assert "nickname" not in dim[member_id]  # the warehouse keeps its own columns
        facts = chain.table("fact_sales_order")
        assert len(facts) == facts_before + 1  # the changed order: a new fact record
        incremental = chain.files()
        chain.service.rebuild()
        assert chain.files().keys() == incremental.keys()
        assert {r["staff_id"]: r for r in chain.table("dim_staff")} == dim
        assert len(chain.table("fact_sales_order")) == len(facts)
