"""`make bench`'s history-index case: what writing the index costs as history grows.

The issue's big table: 1,000,000 keys (sales_order-shaped), 1,000 rows changed per merge,
each key drawn uniformly, each change sending the row it replaces to history. The index
holds H history rows (16,000: one checkpoint; 250,000; 1,000,000: two weeks of merges),
built as the checkpoints would have left it: H rows at the first checkpoint of a fold cycle,
then the rest of that cycle without rows, so every leaf and bucket is folded once and
nothing is pending. Measured, once each (every object is create-only, so a repeat would
write nothing): the copy step's work at each checkpoint of the next cycle (`FOLD_EVERY` = 16
checkpoints of 16 entries, 16,000 history rows each, `Indexer.extend`): the mean and the
slowest checkpoint's time and requests, bytes read and written (mean, and the most one
checkpoint wrote), and the biggest checkpoint object. A unit folding at place p of the
cycle reads the deltas of the p checkpoints before it in this cycle, not of a whole cycle
as it would in a long run: the reads are about half a long run's, the writes the same.

Target: the cost follows the change, not the age: the mean and the slowest checkpoint at the
oldest H within 1.5x of the youngest's time. Each leaf and bucket is rewritten once a cycle,
so a checkpoint writes its rows (into a delta) and about a sixteenth of the index: better
than the whole index, still growing with it (docs/merge_protocol.md, "What the index costs").
`python -m bench.index --quick`: 10,000 keys, 160 rows per merge, H = 2,560 and 10,240;
`--history H ...` other sizes (`--history 16000 4000000`: two months).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import timedelta
from functools import partial
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


def bench_size(keys: int, rows: int, history: int) -> tuple[list[Figure], int, int]:
    """The figures of a cycle of checkpoints on an index of `history` rows; with the bytes
    of the history rows each adds and the size of the biggest checkpoint object written."""
    from services.merge.indexer import Indexer
    from shared.history_index import FOLD_EVERY, INDEX_EVERY, IndexCheckpoint

    rng = random.Random(history)
    cycle = INDEX_EVERY * FOLD_EVERY
    with tempfile.TemporaryDirectory(prefix="bench-index-") as folder:
        started = time.perf_counter()
        store = FolderStore(Path(folder), BUCKET)
        indexer = Indexer(store, _spec(), lambda seq: None)
        # The history as the first checkpoint of a cycle (every leaf folds), then the rest of
        # that cycle without rows (every bucket folds): each unit folded once, nothing pending.
        empty = IndexCheckpoint.empty(TABLE).model_copy(update={"seq": cycle - INDEX_EVERY})
        before = indexer.extend(
            empty, _entries(cycle - INDEX_EVERY + 1, keys, history // INDEX_EVERY, rng)
        )
        while before.seq % cycle != cycle - INDEX_EVERY:
            before = indexer.extend(before, _entries(before.seq + 1, keys, 0, rng))
        print(f"  H={history:,}: generated in {time.perf_counter() - started:.1f}s", flush=True)
        figures, change, biggest = [], 0, 0
        for _ in range(FOLD_EVERY):  # a whole cycle: each unit folds once in it
            entries = _entries(before.seq + 1, keys, rows, rng)
            change = sum(len(text) + 1 for entry in entries for text in entry.history)
            built: list[IndexCheckpoint] = []
            figures.append(measure(store, partial(_extend, indexer, before, entries, built)))
            before = built[0]
            biggest = max(biggest, len(before.dump()))
        return figures, change, biggest


def _extend(indexer: Any, before: Any, entries: list[Any], built: list[Any]) -> None:
    built.append(indexer.extend(before, entries))


def mean(figures: list[Figure]) -> Figure:
    count = len(figures)
    return Figure(
        sum(f.seconds for f in figures) / count,
        sum(f.requests for f in figures) // count,
        sum(f.bytes_read for f in figures) // count,
        sum(f.bytes_written for f in figures) // count,
    )


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
        figures, change, checkpoint = bench_size(keys, rows, history)
        average, slowest = mean(figures), max(figures, key=lambda f: f.seconds)
        most = max(f.bytes_written for f in figures)
        results[history] = {"checkpoint (mean)": average, "checkpoint (slowest)": slowest}
        amplification.append(
            f"| {history:,} | {change / 1e6:.1f} | {average.bytes_read / 1e6:.1f} | "
            f"{average.bytes_written / 1e6:.1f} | {most / 1e6:.1f} | "
            f"{average.bytes_written / change:.0f}x | {checkpoint / 1e3:.0f} |"
        )
    met = print_curve(
        results,
        ("checkpoint (mean)", "checkpoint (slowest)"),
        first_column="step",
        unit="s (requests)",
        cell=lambda f: f"{f.seconds:.2f} ({f.requests:,})",
        targeted=("checkpoint (mean)", "checkpoint (slowest)"),
        target=TARGET,
    )
    head = "| H | MB added | MB read | MB written | most MB written | written / added |"
    print(f"\n{head} biggest checkpoint KB |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(amplification))
    print(f"target (a checkpoint within {TARGET}x as history grows): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
