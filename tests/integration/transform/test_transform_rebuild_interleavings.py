"""A rebuild beside the live transform (issue 18): whichever call of one the other's work
lands before, the warehouse ends byte for byte as a rebuild from scratch after both leaves it.

Pauses are at the AWS-call level (botocore hooks on the paused side's own S3 client), before
every call. The rebuild is of the tables the live changes write (fact_sales_order, dim_date,
dim_staff; `TOUCHED`), and at each pause the live change is the one for the table being
rebuilt then (an order's version while the facts or dim_date are, a staff member's name
while dim_staff is).
"""

from datetime import date, timedelta
from functools import partial

from ops.sample_data import SampleDatabase
from services.transform.service import TransformService
from tests.integration.transform.test_transform_versions import load_baselines
from tests.integration.transform_interleavings import (
    STAFF_TABLES,
    TOUCHED,
    assert_rebuilds_to_the_same_bytes,
    fresh_store,
    live_step,
    logged,
    merge_changes,
    rebuilt_table_at,
)


def run_into(fired, work, *args):
    fired.append(work(*args))


def test_live_events_at_every_step_of_a_rebuild(chain):
    load_baselines(chain, SampleDatabase(seed=41, orders=6))
    store = fresh_store()
    with logged(store.client) as log:
        TransformService(store).rebuild(TOUCHED)
    sections = rebuilt_table_at(log.calls)
    assert set(sections) == set(TOUCHED)
    for step, table in enumerate(sections):
        change = ("dim_staff",) if table in STAFF_TABLES else ("fact_sales_order",)
        fired: list[object] = []
        store = fresh_store()
        with logged(store.client) as log:
            log.pause_at(step, partial(run_into, fired, live_step, chain, step, change))
            TransformService(store).rebuild(TOUCHED)
        assert fired, f"no call {step}: {log.calls[-3:]}"
        assert_rebuilds_to_the_same_bytes(chain)
    last_staff_step = max(i for i, t in enumerate(sections) if t in STAFF_TABLES)
    assert chain.table("dim_staff")[0]["first_name"] == f"Name{last_staff_step}"


def test_a_rebuild_at_every_step_of_a_live_transform(chain):
    load_baselines(chain, SampleDatabase(seed=42, orders=6))
    merge_changes(chain, 0)
    with logged(chain.store.client) as log:
        chain.deliver()
    assert len(log.calls) > 10
    # A delivery's calls vary a little from step to step (the commit log the change tables
    # read grows): pause at every call of the first, past the end of a shorter one.
    for index in range(len(log.calls)):
        step = index + 1
        merge_changes(chain, step)
        fired: list[object] = []
        with logged(chain.store.client) as live:
            rebuild = TransformService(fresh_store()).rebuild
            live.pause_at(index, partial(run_into, fired, rebuild, TOUCHED))
            chain.deliver()
        assert fired or index >= len(live.calls), f"no call {index}: {live.calls[-3:]}"
        if not fired:
            rebuild(TOUCHED)
        assert_rebuilds_to_the_same_bytes(chain)
    assert chain.table("dim_staff")[0]["first_name"] == f"Name{step}"
    assert chain.table("dim_date")[-1]["date_id"] == date(2030, 1, 1) + timedelta(days=step)
