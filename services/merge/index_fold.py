"""One checkpoint's build: the one before it plus its entries' rows, folded where due.

Each leaf and each bucket of the index by time is a **unit**. A checkpoint rewrites (folds) a
unit only at its place in a cycle of `FOLD_EVERY` checkpoints (`folds_at`); the rows of
every unit it does not fold go into the checkpoint's **delta**, and a unit's reader adds the
deltas after the entry it was folded through. So a build writes its own rows once and about
a `FOLD_EVERY`-th of the index, not every unit its rows fall in (docs/merge_protocol.md,
"The history index"). Every object is create-only and a pure function of `before` and the
rows, so a repeat after a crash, or a twin, writes the same names with the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from services.merge.once import create_once
from shared.history_frames import Directory, FrameWriter, bucket_of, bucket_range, by_key
from shared.history_index import (
    BucketRef,
    DeltaRef,
    IndexCheckpoint,
    LeafRef,
    Line,
    delta_key,
    dump_leaf,
    leaf_key,
    parse_leaf,
    split_delta,
    split_leaf,
)
from shared.history_lookup import Deltas

if TYPE_CHECKING:
    from shared.storage import ObjectStore

# Whether the unit at a place of so many, folded through an entry, is folded now.
Folds = Callable[[int, int, int], bool]


class FoldBuild:
    """Checkpoint `seq`: `before` plus `lines`, each unit folded where `folds` says."""

    def __init__(
        self,
        store: ObjectStore,
        before: IndexCheckpoint,
        lines: list[Line],
        seq: int,
        folds: Folds,
    ) -> None:
        self.store, self.before, self.seq, self.folds = store, before, seq, folds
        self.table = before.table
        self.deltas = Deltas(store, self.table, before.deltas)
        self.leaf_of = before.leaf_finder()
        self.new: dict[int, list[Line]] = {}  # per leaf of `before`, its new lines
        for line in lines:
            self.new.setdefault(self.leaf_of(line.key), []).append(line)
        self.merged: dict[int, list[Line]] = {}  # per leaf of `before`, every line through seq
        self.unfolded: set[Line] = set()  # new lines some unit did not fold: the delta's

    def leaf_lines(self, i: int) -> list[Line]:
        """Every line of leaf `i` of `before` through entry `seq`, sorted."""
        if i not in self.merged:
            ref = self.before.leaves[i]
            old = parse_leaf(self.store.get(ref.key).data) if ref.key else []
            pending = self.deltas.of(self.before, ref, ref.low, ref.high)
            self.merged[i] = sorted(old + pending + self.new.get(i, []))
        return self.merged[i]

    def key_lines(self, keys: set[int]) -> list[Line]:
        leaves = sorted({self.leaf_of(key) for key in keys})
        return [line for i in leaves for line in self.leaf_lines(i) if line.key in keys]

    def leaves(self) -> list[LeafRef]:
        """`before`'s leaves, each with new or pending rows folded (and split) if due."""
        built: list[LeafRef] = []
        count = len(self.before.leaves)
        for i, ref in enumerate(self.before.leaves):
            new = self.new.get(i, [])
            through, pending = self.before.through(ref), ref.pending + len(new)
            if not pending:
                built.append(ref)
            elif not self.folds(i, count, through):
                built.append(ref.model_copy(update={"through": through, "pending": pending}))
                self.unfolded.update(new)
            else:
                built += self._fold_leaf(i)
        return built

    def _fold_leaf(self, i: int) -> list[LeafRef]:
        ref = self.before.leaves[i]
        built = []
        for low, high, part in split_leaf(self.leaf_lines(i), ref.low, ref.high):
            data = dump_leaf(part)
            key = leaf_key(self.table, low, high, data)
            create_once(self.store, key, data, content_type="application/x-ndjson")
            built.append(LeafRef(low=low, high=high, key=key, rows=len(part)))
        return built

    def frames(self, lines: list[Line]) -> list[BucketRef]:
        """`before`'s buckets and those `lines` open, each folded if due (all of them when
        `before` has no index by time: built from every leaf)."""
        first = self.before.frames is None
        if first:
            lines = [line for i in range(len(self.before.leaves)) for line in self.leaf_lines(i)]
        new: dict[int, list[Line]] = {}
        for line in lines:
            new.setdefault(bucket_of(line.key), []).append(line)
        refs = {ref.bucket: ref for ref in self.before.frames or []}
        numbers = sorted(refs.keys() | new.keys())
        built = []
        for place, bucket in enumerate(numbers):
            ref = refs.get(bucket) or BucketRef(bucket=bucket, key=None, through=self.before.seq)
            added = new.get(bucket, [])
            through, pending = self.before.through(ref), ref.pending + len(added)
            if not pending:
                built.append(ref)
            elif not first and not self.folds(place, len(numbers), through):
                built.append(ref.model_copy(update={"through": through, "pending": pending}))
                self.unfolded.update(added)
            else:
                pending_lines = [] if first else self._pending(ref)
                built.append(self._fold_bucket(ref, pending_lines + added))
        return built

    def _pending(self, ref: BucketRef) -> list[Line]:
        return self.deltas.of(self.before, ref, *bucket_range(ref.bucket))

    def _fold_bucket(self, ref: BucketRef, added: list[Line]) -> BucketRef:
        """`ref` rewritten with `added` (its pending and new lines) and every other line of
        their keys."""
        full = by_key(self.key_lines({line.key for line in added}))
        writer = FrameWriter(self.table, ref.bucket, self._read, self._write)
        directory = None if ref.key is None else Directory.model_validate_json(self._read(ref.key))
        updated = writer.update(directory, full, set(added))
        return BucketRef(bucket=ref.bucket, key=writer.commit(updated))

    def delta(self) -> DeltaRef | None:
        """The checkpoint's delta: the new lines some unit did not fold (None: none)."""
        if not self.unfolded:
            return None
        first = self.before.seq + 1
        low, width, chunks = split_delta(sorted(self.unfolded))
        for chunk, part in chunks.items():
            key = delta_key(self.table, first, self.seq, chunk)
            create_once(self.store, key, dump_leaf(part), content_type="application/x-ndjson")
        return DeltaRef(first=first, last=self.seq, low=low, width=width, filled=sorted(chunks))

    def kept_deltas(
        self, units: list[LeafRef | BucketRef], delta: DeltaRef | None
    ) -> list[DeltaRef]:
        """The deltas some unit still reads: after the oldest `through` with rows pending."""
        pending = [self.seq if u.through is None else u.through for u in units if u.pending]
        oldest = min(pending, default=self.seq)
        found = [*self.before.deltas, *([delta] if delta else [])]
        return [d for d in found if d.last > oldest]

    def _read(self, key: str) -> bytes:
        return self.store.get(key).data

    def _write(self, key: str, data: bytes) -> None:
        create_once(self.store, key, data)
