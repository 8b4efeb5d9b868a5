"""Deletes through the real merge and transform: a deleted dimension member is flagged, not
dropped; a re-insert makes it live; a deleted order keeps its facts; asof sees the delete."""

from datetime import UTC, datetime, timedelta

from ops.inspection import table_as_of
from ops.sample_data import SampleDatabase
from services.merge.service import MergeService
from services.merge.settings import MergeSettings
from services.merge.source import ObjectRef
from shared.events import EventPublisher
from shared.layout import staging_key
from shared.observation import observed_at_metadata
from shared.queues import MessageQueue
from shared.reader import read_latest
from shared.rows import decode_rows, dump_lines
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.transform_pipeline import BUCKET, BUS


def first(chain, table):
    """latest's first row of a table (untyped, as the other transform tests read them)."""
    return read_latest(chain.store, TABLES[table]).rows[0]


def merge_delete(chain, table, key, at):
    """Stage a delete of `key` (raw lines: TransformChain.merge validates rows) and merge it."""
    spec = TABLES[table]
    line = f'{{"{spec.primary_key}":{key},"_op":"delete","_commit_ts":"{at.isoformat()}"}}'
    put = chain.s3.put_object(
        Bucket=BUCKET,
        Key=staging_key(table),
        Body=dump_lines([line]),
        Metadata=observed_at_metadata(datetime.now(UTC)),
    )
    settings = MergeSettings(
        bucket_name=BUCKET, table_name=table, event_bus_name=BUS, dlq_url=chain.dlq_url
    )
    service = MergeService(
        settings, BucketStore(BUCKET), EventPublisher(BUS), MessageQueue(chain.dlq_url)
    )
    assert service.process(ObjectRef(BUCKET, staging_key(table), put.get("VersionId"), "{}"))


def baseline(chain, seed):
    for table, rows in SampleDatabase(seed=seed, orders=6).snapshot().items():
        chain.merge(table, rows, baseline=True)
    chain.deliver()


def test_a_deleted_staff_member_stays_flagged_and_a_reinsert_makes_it_live(chain):
    baseline(chain, 31)
    gone, at = first(chain, "staff"), datetime(2026, 12, 1, 9, 30, 0, 123456)
    before = {r["staff_id"]: r for r in chain.table("dim_staff")}
    assert all(r["deleted_date"] is None for r in before.values())

    merge_delete(chain, "staff", gone.staff_id, at)
    chain.deliver()

    after = {r["staff_id"]: r for r in chain.table("dim_staff")}
    assert after.keys() == before.keys()
    assert (after[gone.staff_id]["deleted_date"], after[gone.staff_id]["deleted_time"]) == (
        at.date(),
        at.time(),
    )
    assert after[gone.staff_id]["email_address"] == gone.email_address
    assert {k: v for k, v in after.items() if k != gone.staff_id} == {
        k: v for k, v in before.items() if k != gone.staff_id
    }
    # a rebuild gives the same flag
    chain.service.rebuild()
    assert {r["staff_id"]: r for r in chain.table("dim_staff")} == after

    back = gone.model_copy(update={"last_updated": at + timedelta(hours=1)})
    chain.merge("staff", [back.model_dump()])
    chain.deliver()
    live = {r["staff_id"]: r for r in chain.table("dim_staff")}
    assert live[gone.staff_id]["deleted_date"] is None
    assert live[gone.staff_id]["deleted_time"] is None


def test_a_deleted_order_keeps_its_facts_and_adds_none(chain):
    baseline(chain, 32)
    order = first(chain, "sales_order")
    facts = chain.table("fact_sales_order")
    merge_delete(chain, "sales_order", order.sales_order_id, datetime(2026, 12, 1, 10))
    chain.deliver()
    assert sorted(chain.table("fact_sales_order"), key=str) == sorted(facts, key=str)
    assert any(f["sales_order_id"] == order.sales_order_id for f in facts)


def test_asof_leaves_a_deleted_key_out_after_its_delete(chain):
    baseline(chain, 33)
    spec = TABLES["staff"]
    gone = first(chain, "staff")
    before = datetime.now(UTC).replace(tzinfo=None)
    at = before + timedelta(seconds=1)
    merge_delete(chain, "staff", gone.staff_id, at)

    def keys(when):
        rows = decode_rows(table_as_of(chain.store, spec, when), "asof")
        return {r["staff_id"] for r in rows}

    assert gone.staff_id in keys(before)
    assert gone.staff_id not in keys(at + timedelta(seconds=1))
