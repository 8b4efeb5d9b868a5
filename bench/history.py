"""`make bench`'s history cases: what reading history costs as a table's history grows.

A sales_order-shaped table of 1,000 keys (one latest file) whose commit log holds one entry
per merge, each superseding one row (a key drawn uniformly; the key asked about, `ASKED`, has
the same 10 versions at every size): N = 100, 10,000 and 100,000 history objects, written
straight into a `FolderStore` (entries, history objects, latest,
and the history index's checkpoint as the merges would have left it: the last one at or below
latest's entry, the entries after it read by every reader). Timed, median of `--repeat`:

- status:   `status`'s history counts (shared/history_lookup.history_totals)
- late row: the real merge (MergeService.process) of a file read before everything else,
            whose row must be checked against the key's committed history
- history:  `ingestctl history KEY` (ops.inspection.row_history)
- asof:     `ingestctl asof` (ops.inspection.table_as_of), the whole table at a time
- checkpoint: the copy step writing the next checkpoint (16 entries into the index)
- scan:     the old way, every history object read (up to 10,000 objects), for contrast

Target: each history-reading operation within 1.5x between 100 and 100,000 objects.
`python -m bench.history --quick` runs N = 100 and 1,000 once (CI: tests/bench).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.curve import Figure, measure, median, print_curve, sizes_and_repeat
from bench.merge import BUCKET, PK, TABLE, _merge_service, _row
from ops.folder_store import FolderStore

KEYS = 1_000
# The key `history` and the late row ask about: exactly this many versions at every size, so
# what is asked stays the same while the table ages.
ASKED, ASKED_VERSIONS = KEYS // 2, 10
FULL_SIZES = (100, 10_000, 100_000)
QUICK_SIZES = (100, 1_000)
SCAN_UP_TO = 10_000
TARGET = 1.5
T0 = datetime(2025, 1, 1, tzinfo=UTC)
OPERATIONS = ("status", "late row", "history", "asof")
LAG = 8  # entries after the last checkpoint (at most INDEX_EVERY - 1; 8 is the average)


def _spec() -> Any:
    from shared.tables import get_table

    return get_table(TABLE)


def _version(key: int, version: int) -> Any:
    return _spec().row_model.model_construct(**_row(key, version, 1 + version % 90))


Change = tuple[int, Any, Any, Any]  # key, its row replaced (None: inserted), when seen, new row


def _entry(seq: int, key: int, old: Any, old_seen: Any, new: Any) -> Any:
    """Entry `seq`: `key` updated to `new`, its row `old` (observed `old_seen`) to history
    (`old` None: `key` inserted, no history)."""
    return entry_of(seq, [(key, old, old_seen, new)])


def entry_of(seq: int, changes: list[Change]) -> Any:
    """Entry `seq` (a merge 20 minutes after the one before) writing `changes`, the rows
    they replace to history; with the observation of its rows."""
    from shared.commitlog import ENTRY_SCHEMA_VERSION, Layout, LogEntry, SourceRef
    from shared.events import MergeCounts
    from shared.history import HistoryRow, history_row_json
    from shared.layout import Area, history_key, object_stamp, staging_key
    from shared.observation import Observation
    from shared.versions import Version, version_json

    spec, at = _spec(), T0 + timedelta(minutes=20 * seq)
    batch, stamp = f"{seq:016x}", object_stamp(at)
    seen = Observation(at)
    history = [
        history_row_json(spec, HistoryRow(old, new.last_updated, batch, old_seen))
        for _, old, old_seen, new in changes
        if old is not None
    ]
    updated = len(history)
    return LogEntry(
        schema_version=ENTRY_SCHEMA_VERSION,
        seq=seq,
        table=TABLE,
        batch=batch,
        source=SourceRef(
            area=Area.STAGING,
            key=staging_key(TABLE),
            version_id=batch,
            stamp=stamp,
            last_modified=at,
            observed=seen.text,
        ),
        layout=Layout.SINGLE,
        upserts={key: version_json(spec, Version(new, seen)) for key, _, _, new in changes},
        history=history,
        history_key=history_key(TABLE, stamp, batch) if history else None,
        rows=len(changes),
        counts=MergeCounts(updated=updated, inserted=len(changes) - updated, history_rows=updated),
        keys_written=[key for key, _, _, _ in changes],
        committed_at=at,
    ), seen


def generate(root: Path, objects: int) -> FolderStore:
    """Entry 1 loads the table; entries 2..objects+1 each send one row to history; then a few
    inserts, so that every size has `LAG` entries after its last checkpoint."""
    from services.merge.indexer import Indexer
    from shared.commitlog import BATCH_METADATA, SEQ_METADATA, entry_key
    from shared.history_index import INDEX_EVERY, IndexCheckpoint
    from shared.layout import latest_key
    from shared.observation import Observation
    from shared.rows import dump_lines
    from shared.versions import Version, dump_versions

    store, spec, rng = FolderStore(root, BUCKET), _spec(), random.Random(objects)
    current = {k: (_version(k, 0), Observation(T0)) for k in range(1, KEYS + 1)}
    entries = []
    head = objects + 1 + (LAG - objects - 1) % INDEX_EVERY
    asked = {2 + i * objects // ASKED_VERSIONS for i in range(ASKED_VERSIONS)}
    others = [k for k in range(1, KEYS + 1) if k != ASKED]
    for seq in range(2, head + 1):
        key = (ASKED if seq in asked else rng.choice(others)) if seq <= objects + 1 else KEYS + seq
        old, old_seen = current.get(key, (None, None))
        new = _version(key, seq)
        entry, seen = _entry(seq, key, old, old_seen, new)
        current[key] = (new, seen)
        entries.append(entry)
        _write(root, entry_key(TABLE, seq), entry.model_dump_json().encode())
        if entry.history_key:
            _write(root, entry.history_key, dump_lines(entry.history))
    latest = dump_versions(spec, [Version(row, seen) for row, seen in current.values()])
    store.put(latest_key(TABLE), latest, metadata={SEQ_METADATA: str(head), BATCH_METADATA: "b"})
    checkpoint = head - head % INDEX_EVERY
    Indexer(store, spec, lambda seq: None).extend(
        IndexCheckpoint.empty(TABLE).model_copy(update={"seq": 1}), entries[: checkpoint - 1]
    )
    return store


def _write(root: Path, key: str, data: bytes) -> None:
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(data)


def _late_merge(store: FolderStore, attempt: int) -> Callable[[], None]:
    """Stage a row of `ASKED` read before every merge (late: its committed history decides
    whether it is new; each attempt's content is) and merge it."""
    from services.merge.source import ObjectRef
    from shared.layout import staging_key
    from shared.observation import observed_at_metadata
    from shared.rows import dump_rows

    service = _merge_service(store, partitioned=False)
    row = _spec().row_model.model_construct(**{**_row(ASKED, 0, 1), "units_sold": 90_000 + attempt})
    put = store.put(
        staging_key(TABLE),
        dump_rows(_spec(), [row]),
        metadata=observed_at_metadata(T0 - timedelta(days=1)),
    )

    def merge() -> None:
        outcome = service.process(ObjectRef(BUCKET, staging_key(TABLE), put.version_id, "{}"))
        if outcome is None or outcome.status != "committed":
            raise RuntimeError(f"the late row did not commit: {outcome}")

    return merge


def _reads(store: FolderStore) -> dict[str, Callable[[], Any]]:
    from ops.inspection import row_history, table_as_of
    from shared.history_lookup import history_totals

    spec = _spec()
    return {
        "status": lambda: history_totals(store, spec),
        "history": lambda: row_history(store, spec, ASKED),
        "asof": lambda: table_as_of(store, spec, T0 + timedelta(days=30)),
    }


def _checkpoint_write(store: FolderStore) -> Callable[[], Any]:
    """The copy step's work at a checkpoint: the next 16 entries into the index."""
    from services.merge.indexer import Indexer
    from shared.history_index import INDEX_EVERY, checkpoint_at
    from shared.history_lookup import read_checkpoint
    from shared.observation import Observation
    from shared.reader import latest_seq

    spec = _spec()
    head = latest_seq(store, spec)
    before = read_checkpoint(store, TABLE, checkpoint_at(head))
    assert before is not None
    rng = random.Random(head)
    entries = []
    for seq in range(before.seq + 1, before.seq + INDEX_EVERY + 1):
        key = rng.randint(1, KEYS)
        # the replaced row was observed by the merge before (as a real merge's history row is)
        seen = Observation(T0 + timedelta(minutes=20 * seq - 1))
        entries.append(_entry(seq, key, _version(key, seq), seen, _version(key, seq + 1))[0])
    indexer = Indexer(store, spec, lambda seq: None)
    return lambda: indexer.extend(before, entries)


def bench_size(objects: int, repeat: int) -> dict[str, Figure]:
    from shared.reader import iter_history

    with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
        started = time.perf_counter()
        store = generate(Path(folder), objects)
        print(f"  N={objects:,}: generated in {time.perf_counter() - started:.1f}s", flush=True)
        figures = {}
        for name, work in _reads(store).items():
            work()  # first use builds the row models: not what is measured
            figures[name] = median([measure(store, work) for _ in range(repeat)])
        if objects <= SCAN_UP_TO:
            scan = lambda: sum(len(rows) for _, rows in iter_history(store, _spec()))  # noqa: E731
            figures["scan"] = median([measure(store, scan) for _ in range(repeat)])
        _late_merge(store, -1)()  # the same warm-up for the merge
        figures["late row"] = median([measure(store, _late_merge(store, i)) for i in range(repeat)])
        figures["checkpoint"] = measure(store, _checkpoint_write(store))
        return figures


def report(results: dict[int, dict[str, Figure]]) -> bool:
    return print_curve(
        results,
        (*OPERATIONS, "checkpoint", "scan"),
        first_column="operation",
        unit="s (requests)",
        cell=lambda f: f"{f.seconds:.4f} ({f.requests})",
        targeted=OPERATIONS,
        target=TARGET,
    )


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n", 1)[0]
    sizes, repeat = sizes_and_repeat(argv, description, QUICK_SIZES, FULL_SIZES)
    print(f"history cases: {TABLE}, {KEYS:,} keys, {PK} drawn uniformly per merge")
    results = {n: bench_size(n, repeat) for n in sizes}
    met = report(results)
    print(f"target (history-reading operations within {TARGET}x): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
