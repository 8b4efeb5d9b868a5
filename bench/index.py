"""`make bench`'s history-index case: what writing the index costs as history grows.

The issue's big table: 1,000,000 keys (sales_order-shaped), 1,000 rows changed per merge,
each key drawn uniformly, each change sending the row it replaces to history. The index
holds H history rows (16,000: one checkpoint; 250,000; 1,000,000: two weeks of merges),
built as the checkpoints would have left it. Measured, once (every object is create-only, so
a repeat would write nothing): the copy step's work at the next checkpoint, 16 entries
(16,000 history rows) into the index (`Indexer.extend`): time, requests, bytes read and
written, and the checkpoint object it writes.

Target: the cost follows the change, not the age: the checkpoint at the oldest H within
1.5x of the youngest's time. Not met today (issue 17 stays open): a checkpoint rewrites
every leaf (up to 512 rows) a new row falls in, and its bucket's last frame, so once the
index holds more leaves than a checkpoint adds rows it rewrites about the whole index
(docs/merge_protocol.md, "What the index costs").
`python -m bench.index --quick`: 10,000 keys, 160 rows per merge, H = 2,560 and 10,240;
`--history H ...` other sizes (`--history 16000 4000000`: two months, ~12 minutes).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.curve import Figure, measure, print_curve
from bench.history import T0, _spec, _version, entry_of
from bench.merge import BUCKET, TABLE
from ops.folder_store import FolderStore

FULL = (1_000_000, 1_000, (16_000, 250_000, 1_000_000))  # keys, rows per merge, H
QUICK = (10_000, 160, (2_560, 10_240))
TARGET = 1.5


def _entries(first: int, keys: int, rows: int, rng: random.Random) -> list[Any]:
    """`INDEX_EVERY` entries from seq `first`, each replacing `rows` keys drawn uniformly."""
    from shared.history_index import INDEX_EVERY
    from shared.observation import Observation

    entries = []
    for seq in range(first, first + INDEX_EVERY):
        seen = Observation(T0 + timedelta(minutes=20 * (seq - 1)))  # seen by the merge before
        changed = rng.sample(range(1, keys + 1), rows)
        changes = [(k, _version(k, seq), seen, _version(k, seq + 1)) for k in changed]
        entries.append(entry_of(seq, changes)[0])
    return entries


def bench_size(keys: int, rows: int, history: int) -> tuple[Figure, int, int]:
    """The next checkpoint's figure on an index of `history` rows; with the bytes of the
    history rows it adds and the size of the checkpoint object it writes."""
    from services.merge.indexer import Indexer
    from shared.history_index import INDEX_EVERY, IndexCheckpoint

    rng = random.Random(history)
    with tempfile.TemporaryDirectory(prefix="bench-index-") as folder:
        started = time.perf_counter()
        store = FolderStore(Path(folder), BUCKET)
        indexer = Indexer(store, _spec(), lambda seq: None)
        empty = IndexCheckpoint.empty(TABLE)
        before = indexer.extend(empty, _entries(1, keys, history // INDEX_EVERY, rng))
        print(f"  H={history:,}: generated in {time.perf_counter() - started:.1f}s", flush=True)
        entries = _entries(before.seq + 1, keys, rows, rng)
        change = sum(len(text) + 1 for entry in entries for text in entry.history)
        written: list[IndexCheckpoint] = []
        figure = measure(store, lambda: written.append(indexer.extend(before, entries)))
        return figure, change, len(written[0].model_dump_json(indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10,000 keys, H = 2,560 and 10,240")
    parser.add_argument("--history", type=int, nargs="+", metavar="H", help="other sizes of H")
    args = parser.parse_args(argv)
    keys, rows, sizes = QUICK if args.quick else FULL
    sizes = tuple(args.history or sizes)
    print(f"history index: {TABLE}, {keys:,} keys, {rows:,} rows per merge drawn uniformly")
    results, amplification = {}, []
    for history in sizes:
        figure, change, checkpoint = bench_size(keys, rows, history)
        results[history] = {"checkpoint": figure}
        amplification.append(
            f"| {history:,} | {change / 1e6:.1f} | {figure.bytes_read / 1e6:.1f} | "
            f"{figure.bytes_written / 1e6:.1f} | {figure.bytes_written / change:.0f}x | "
            f"{checkpoint / 1e3:.0f} |"
        )
    met = print_curve(
        results,
        ("checkpoint",),
        first_column="step",
        unit="s (requests)",
        cell=lambda f: f"{f.seconds:.2f} ({f.requests:,})",
        targeted=("checkpoint",),
        target=TARGET,
    )
    print("\n| H | MB added | MB read | MB written | written / added | checkpoint KB |")
    print("|---|---|---|---|---|---|")
    print("\n".join(amplification))
    print(f"target (a checkpoint within {TARGET}x as history grows): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
