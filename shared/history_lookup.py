"""Committed history for some keys (or all) and its totals, from the index where there is one.

A view is a checkpoint of the history index (shared/history_index.py) plus the log entries
after it: what it gives is exactly what reading every history object of those entries would
give, in the same order, but it reads the leaves of the keys asked for, their chunks of the
deltas those leaves have not folded yet, and at most `INDEX_EVERY` entries (more only while
copies lag the log). A table with no checkpoint yet
(fewer entries than that, or a latest written before the index) is read from every entry and
the history objects older than the log, which is then as small as a checkpoint's worth.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

from shared.commitlog import LogEntry, entries_after, read_entry
from shared.history import HistoryRow, history_row_json, load_history
from shared.history_index import (
    BucketRef,
    DeltaRef,
    IndexCheckpoint,
    LeafRef,
    Line,
    checkpoint_at,
    checkpoint_key,
    delta_key,
    entry_lines,
    parse_leaf,
)
from shared.reader import history_keys, latest_seq, read_history
from shared.rows import dump_lines
from shared.storage import ObjectStore
from shared.tables import TableSpec


class Deltas:
    """A checkpoint's deltas, each chunk read at most once (its lines are sorted by key)."""

    def __init__(self, store: ObjectStore, table: str, deltas: list[DeltaRef]) -> None:
        self.store, self.table, self.deltas = store, table, deltas
        self.read: dict[str, tuple[list[int], list[Line]]] = {}

    def _chunk(self, delta: DeltaRef, chunk: int) -> tuple[list[int], list[Line]]:
        key = delta_key(self.table, delta.first, delta.last, chunk)
        if key not in self.read:
            lines = parse_leaf(self.store.get(key).data)
            self.read[key] = ([line.key for line in lines], lines)
        return self.read[key]

    def lines(self, low: int, high: int, after: int) -> list[Line]:
        """The deltas' lines of keys low..high from entries after `after`."""
        found = []
        for delta in self.deltas:
            for chunk in delta.chunks(low, high) if delta.last > after else ():
                keys, lines = self._chunk(delta, chunk)
                found += lines[bisect_left(keys, low) : bisect_right(keys, high)]
        return found

    def of(
        self, checkpoint: IndexCheckpoint, ref: LeafRef | BucketRef, low: int, high: int
    ) -> list[Line]:
        """The lines of keys low..high (within `ref`'s) that `ref`'s object does not hold."""
        return self.lines(low, high, checkpoint.through(ref)) if ref.pending else []


def index_lines(
    store: ObjectStore, checkpoint: IndexCheckpoint, deltas: Deltas, keys: set[int] | None
) -> list[Line]:
    """The checkpoint's lines of `keys` (None: every key): each leaf's and its deltas'."""
    leaves = checkpoint.leaves
    spans: dict[int, tuple[int, int]] = {}  # per leaf, the range of the keys asked in it
    if keys is None:
        spans = {i: (leaf.low, leaf.high) for i, leaf in enumerate(leaves)}
    leaf_of = checkpoint.leaf_finder()
    for key in sorted(keys or ()):
        low = spans.get(i := leaf_of(key), (key, key))[0]
        spans[i] = (low, key)
    found: list[Line] = []
    for i, (low, high) in sorted(spans.items()):
        ref = leaves[i]
        found += parse_leaf(store.get(ref.key).data) if ref.key is not None else []
        found += deltas.of(checkpoint, ref, low, high)
    return found


@dataclass(frozen=True)
class HistoryView:
    """Committed history as of a checkpoint (or, with none, the history objects older than
    the log: `base`) and the entries read after it."""

    store: ObjectStore
    spec: TableSpec
    checkpoint: IndexCheckpoint
    entries: tuple[LogEntry, ...]
    base: tuple[Line, ...] = ()

    def lines(self, keys: set[int] | None = None) -> list[Line]:
        """The index lines of `keys` (None: every key), in full-scan order."""
        found = index_lines(self.store, self.checkpoint, self.deltas, keys)
        found += self.base
        found += [line for entry in self.entries for line in entry_lines(self.spec, entry)]
        chosen = found if keys is None else [line for line in found if line.key in keys]
        return sorted(chosen, key=lambda line: (line.origin, line.position))

    @cached_property
    def deltas(self) -> Deltas:
        return Deltas(self.store, self.spec.name, self.checkpoint.deltas)

    def rows(self, keys: set[int] | None = None) -> list[HistoryRow]:
        return history_rows(self.spec, self.lines(keys), f"index of {self.spec.name}")

    def totals(self) -> tuple[int, int]:
        """History objects and history rows, as a listing would count them."""
        objects = self.checkpoint.history_objects + sum(1 for e in self.entries if e.history_key)
        rows = self.checkpoint.history_rows + sum(len(e.history) for e in self.entries)
        return objects, rows


def history_rows(spec: TableSpec, lines: Iterable[Line], source: str) -> list[HistoryRow]:
    return load_history(spec, dump_lines([line.text for line in lines]), source)


def read_checkpoint(store: ObjectStore, table: str, seq: int) -> IndexCheckpoint | None:
    found = store.get_if_exists(checkpoint_key(table, seq))
    return None if found is None else IndexCheckpoint.model_validate_json(found.data)


def before_the_log(
    store: ObjectStore, spec: TableSpec, entry: Callable[[int], LogEntry | None]
) -> tuple[list[Line], int]:
    """The history objects no entry names (written before the commit log) as index lines,
    and how many there are. Listed first, then entries read from 1 until every listed
    object is named or the log ends: an object is written after its entry, so it is found."""
    unnamed = set(history_keys(store, spec))
    seq = 1
    while unnamed and (found := entry(seq)) is not None:
        unnamed.discard(found.history_key or "")
        seq += 1
    lines = [
        Line(getattr(item.row, spec.primary_key), key, i, history_row_json(spec, item))
        for key in sorted(unnamed)
        for i, item in enumerate(read_history(store, spec, key))
    ]
    return lines, len(unnamed)


def open_view(
    store: ObjectStore, spec: TableSpec, head: int, *, through: int | None = None
) -> HistoryView:
    """The view of a state that reflects entry `head`: its checkpoint and the entries after it
    through `through` (None: every entry committed). With no checkpoint (fewer entries than
    one, or a latest written before the index), the objects older than the log and every
    entry."""
    start = checkpoint_at(head)
    checkpoint = read_checkpoint(store, spec.name, start) if start else None
    if checkpoint is not None:
        entries = entries_after(store, spec.name, start, through)
        return HistoryView(store, spec, checkpoint, tuple(entries))
    entries = entries_after(store, spec.name, 0, through)
    given = {entry.seq: entry for entry in entries}
    base, objects = before_the_log(
        store, spec, lambda seq: given.get(seq) or read_entry(store, spec.name, seq)
    )
    empty = IndexCheckpoint.empty(spec.name)
    counted = empty.model_copy(update={"history_objects": objects, "history_rows": len(base)})
    return HistoryView(store, spec, counted, tuple(entries), tuple(base))


def committed_history(
    store: ObjectStore, spec: TableSpec, keys: set[int] | None = None
) -> list[HistoryRow]:
    """Every committed history row of `keys` (None: all), in the order a full scan gives."""
    return open_view(store, spec, latest_seq(store, spec)).rows(keys)


def committed_texts(store: ObjectStore, spec: TableSpec, keys: set[int] | None = None) -> list[str]:
    """`committed_history` as the stored row texts (audit columns included), not validated
    again: for readers that only order and show them (`history`, `asof`)."""
    view = open_view(store, spec, latest_seq(store, spec))
    return [line.text for line in view.lines(keys)]


def history_totals(store: ObjectStore, spec: TableSpec) -> tuple[int, int]:
    """How many history objects and rows the table has (what `status` shows)."""
    return open_view(store, spec, latest_seq(store, spec)).totals()
