"""Interleavings for the transform at the AWS-call level: run something just before the Nth
call a boto3 client makes (botocore's `provide-client-params` event, as `S3Hooks` does in
merge_pipeline.py), and the oracle every interleaving is held to: a rebuild from scratch
of the bucket as it ends gives the same warehouse bytes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import boto3

from services.transform import parquet
from services.transform.changes import ALL_TABLES
from services.transform.service import TransformService
from shared.reader import read_latest
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.merge_pipeline import _key_of
from tests.integration.transform_pipeline import BUCKET, REGION, TransformChain


class CallLog:
    """Every call a client makes, as "<Operation> <key>"; `pause_at` runs an action once,
    just before the call with that index (0-based) is sent, `pause_after` once its answer is
    in."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[str] = []
        self._answered = 0
        self._before_pauses: dict[int, Callable[[], None]] = {}
        self._after_pauses: dict[int, Callable[[], None]] = {}
        client.meta.events.register("provide-client-params", self._before)
        client.meta.events.register("after-call", self._after)

    def pause_at(self, index: int, action: Callable[[], None]) -> CallLog:
        self._before_pauses[index] = action
        return self

    def pause_after(self, index: int, action: Callable[[], None]) -> CallLog:
        self._after_pauses[index] = action
        return self

    @property
    def pending(self) -> int:
        """Pauses that have not fired (their call never came)."""
        return len(self._before_pauses) + len(self._after_pauses)

    def close(self) -> None:
        self.client.meta.events.unregister("provide-client-params", self._before)
        self.client.meta.events.unregister("after-call", self._after)

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        index = len(self.calls)
        self.calls.append(f"{model.name} {_key_of(params)}".rstrip())
        action = self._before_pauses.pop(index, None)
        if action is not None:
            action()

    def _after(self, **_: Any) -> None:
        index = self._answered
        self._answered += 1
        action = self._after_pauses.pop(index, None)
        if action is not None:
            action()


@contextmanager
def logged(client: Any) -> Iterator[CallLog]:
    log = CallLog(client)
    try:
        yield log
    finally:
        log.close()


def fresh_store() -> BucketStore:
    """A store on a client of its own (so another client's hooks do not see its calls)."""
    return BucketStore(BUCKET, boto3.client("s3", region_name=REGION))


def changed(table: str, index: int, minutes: int, **values: Any) -> dict[str, Any]:
    """latest's `index`-th row of a table (by key), changed, `minutes` later."""
    rows = read_latest(fresh_store(), TABLES[table]).rows
    row = rows[index % len(rows)]
    update = {**values, "last_updated": row.last_updated + timedelta(minutes=minutes)}
    return dict(row.model_copy(update=update).model_dump())


# The warehouse tables the live changes below write (the rest are not theirs to change).
TOUCHED = ("fact_sales_order", "dim_date", "dim_staff", "changes_sales_order", "changes_staff")
ORDER_TABLES = {"fact_sales_order", "dim_date", "changes_sales_order"}
STAFF_TABLES = {"dim_staff", "changes_staff"}


def merge_changes(chain: TransformChain, step: int, tables: tuple[str, ...] = TOUCHED) -> None:
    """Changes different at every step, merged (their events wait in the transform queue):
    an order's new version, with a delivery date that widens dim_date, for the facts and
    dim_date; a staff member's new name for dim_staff."""
    if ORDER_TABLES & set(tables):
        delivery = (date(2030, 1, 1) + timedelta(days=step)).isoformat()
        order = changed("sales_order", step, 10 + step, agreed_delivery_date=delivery)
        chain.merge("sales_order", [order])
    if STAFF_TABLES & set(tables):
        chain.merge("staff", [changed("staff", 0, 10 + step, first_name=f"Name{step}")])


def live_step(chain: TransformChain, step: int, tables: tuple[str, ...] = TOUCHED) -> None:
    """The changes merged and transformed by the real handler."""
    merge_changes(chain, step, tables)
    chain.deliver()


def rebuilt_table_at(calls: list[str]) -> list[str]:
    """For each call of a rebuild, the warehouse table it was rebuilding (a table's attempt
    is its manifest's GET, then the listing of its folder)."""
    tables = []
    current = ""
    for following in [*calls[1:], ""]:
        if following.startswith("ListObjectsV2 warehouse/changes/"):
            current = "changes_" + following.split("/")[2]
        elif following.startswith("ListObjectsV2 warehouse/"):
            current = following.split("/")[1]
        tables.append(current)
    return tables


def assert_rebuilds_to_the_same_bytes(
    chain: TransformChain, tables: tuple[str, ...] = TOUCHED
) -> None:
    """The warehouse as it is equals a rebuild from scratch of these tables, byte for byte
    (and is left as that rebuild wrote it: the same bytes)."""
    store = fresh_store()
    before = {k: store.get(k).data for k in sorted(store.keys("warehouse/"))}
    for table in tables:
        for key in list(store.keys(ALL_TABLES[table].prefix)):
            store.delete(key)
    TransformService(store).rebuild(tables)
    after = {k: store.get(k).data for k in sorted(store.keys("warehouse/"))}
    assert sorted(after) == sorted(before)
    assert [k for k in after if after[k] != before[k]] == []


def assert_manifests_count_their_files(
    chain: TransformChain, tables: tuple[str, ...] = TOUCHED
) -> None:
    """Each manifest's counts are those of the files it names, as committed."""
    store = fresh_store()
    for name in tables:
        table = ALL_TABLES[name]
        manifest = json.loads(store.get(table.manifest_key).data)
        counts = {k: len(parquet.decode(table, store.get(k).data)) for k in manifest["files"]}
        assert manifest["files"] == counts, name
        assert manifest["rows"] == sum(counts.values()), name
