"""`make bench`'s transform cases: one merge event's cost as the warehouse grows, and a rebuild.

A sales_order table whose orders are created at a steady rate (`ORDERS_PER_MONTH`), so a
warehouse of N fact rows spans N / ORDERS_PER_MONTH months, as a real one ages; latest in
partitions (a fact table's layout), on local files (`ops/folder_store.FolderStore`). Each size
is loaded by the real merge (one staged file of N orders) and merged `INDEX_EVERY` batches
more (a table in steady state: its history index has a checkpoint), then:

- rebuild: `ingestctl transform rebuild`'s work (TransformService.rebuild), every table;
- event:   one merge event's transform (TransformService.apply on the HistoryAppended the real
           merge published) for a batch of `CHANGES` rows like totesys's: half updates to the
           newest orders, half new orders; median of `--repeat`, a fresh batch each time.

Target: one event within 1.5x between 10,000 and 1,000,000 fact rows.
`python -m bench.transform --quick` runs 1,000 and 5,000 rows once (CI: tests/bench).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from bench.curve import Figure, measure, median, print_curve, sizes_and_repeat
from bench.merge import BUCKET, QUIET, T0, TABLE, _canonical, _merge_service, _row
from ops.folder_store import FolderStore

ORDERS_PER_MONTH = 10_000
CHANGES = 1_000
FULL_SIZES = (10_000, 1_000_000)
QUICK_SIZES = (1_000, 5_000)
TARGET = 1.5
MINUTES_PER_ORDER = 30 * 24 * 60 / ORDERS_PER_MONTH


class Captured:
    """The merge's events, kept (the bus is not what is measured)."""

    def __init__(self) -> None:
        self.details: list[Any] = []

    def publish(self, details: Sequence[Any]) -> None:
        self.details.extend(details)


def _order(key: int, version: int) -> dict[str, Any]:
    created = T0 + timedelta(minutes=(key - 1) * MINUTES_PER_ORDER)
    row = _row(key, 0, 1 + version % 90)
    minutes = (created - T0) / timedelta(minutes=1) + version
    return {**row, "created_at": created, "last_updated": T0 + timedelta(minutes=minutes)}


class Table:
    """The table and its merges: `load` the first N orders, `change` a totesys-like batch."""

    def __init__(self, store: FolderStore) -> None:
        self.store, self.events = store, Captured()
        self.merge = _merge_service(store, partitioned=True, publisher=self.events)
        self.keys, self.version = 0, 0

    def _stage_and_merge(self, rows: list[dict[str, Any]]) -> Any:
        from services.merge.source import ObjectRef
        from shared.layout import staging_key

        put = self.store.put(staging_key(TABLE), _canonical(rows))
        self.events.details.clear()
        outcome = self.merge.process(ObjectRef(BUCKET, staging_key(TABLE), put.version_id, "{}"))
        if outcome is None or outcome.status != "committed":
            raise RuntimeError(f"the batch did not commit: {outcome}")
        return outcome

    def load(self, orders: int) -> None:
        self._stage_and_merge([_order(k, 0) for k in range(1, orders + 1)])
        self.keys = orders

    def change(self) -> Any:
        """Half the batch updates the newest orders, half are new; the HistoryAppended."""
        from shared.events import HistoryAppended

        self.version += 1
        updated = range(self.keys - CHANGES // 2 + 1, self.keys + 1)
        new = range(self.keys + 1, self.keys + CHANGES // 2 + 1)
        self._stage_and_merge([_order(k, self.version) for k in [*updated, *new]])
        self.keys += len(new)
        return next(d for d in self.events.details if isinstance(d, HistoryAppended))


def bench_size(orders: int, repeat: int) -> dict[str, Figure]:
    from services.transform.service import SourceChange, TransformService
    from shared.history_index import INDEX_EVERY

    with tempfile.TemporaryDirectory(prefix="bench-transform-") as folder:
        store = FolderStore(Path(folder), BUCKET)
        table = Table(store)
        started = time.perf_counter()
        table.load(orders)
        # A table in steady state: its history index has a checkpoint, so readers read the
        # entries after it, not the load's (before the first checkpoint, every entry is read).
        for _ in range(INDEX_EVERY):
            table.change()
        print(f"  N={orders:,}: loaded in {time.perf_counter() - started:.1f}s", flush=True)
        service = TransformService(store)
        figures = {"rebuild": measure(store, service.rebuild)}
        service.apply(SourceChange.from_event(table.change()))  # warm-up, not measured
        events = []
        for _ in range(repeat):
            change = SourceChange.from_event(table.change())
            events.append(measure(store, lambda: service.apply(change)))  # noqa: B023
        figures["event"] = median(events)
        return figures


def report(results: dict[int, dict[str, Figure]]) -> bool:
    return print_curve(
        results,
        ("event", "rebuild"),
        first_column="case",
        unit="s (requests, MB read/written)",
        cell=lambda f: (
            f"{f.seconds:.3f} ({f.requests}, {f.bytes_read / 2**20:.1f}/"
            f"{f.bytes_written / 2**20:.1f})"
        ),
        targeted=("event",),
        target=TARGET,
    )


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n", 1)[0]
    sizes, repeat = sizes_and_repeat(argv, description, QUICK_SIZES, FULL_SIZES)
    print(
        f"transform cases: {TABLE}, {ORDERS_PER_MONTH:,} orders created a month, "
        f"batches of {CHANGES:,} changes"
    )
    # Quiet only for this run: a caller's process (a test worker) keeps its own settings.
    with mock.patch.dict(os.environ, QUIET):
        met = report({n: bench_size(n, repeat) for n in sizes})
    print(f"target (one event within {TARGET}x): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
