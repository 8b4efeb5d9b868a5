"""Committed history for some keys (or all) and its totals, from the index where there is one.

A view is a checkpoint of the history index (shared/history_index.py) plus the log entries
after it: what it gives is exactly what reading every history object of those entries would
give, in the same order, but it reads the leaves of the keys asked for and at most
`INDEX_EVERY` entries (more only while copies lag the log). A table with no checkpoint yet
(fewer entries than that, or a latest written before the index) is read by a full scan, which
is then as small.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.commitlog import LogEntry, entries_after
from shared.history import HistoryRow, load_history
from shared.history_index import (
    IndexCheckpoint,
    Line,
    checkpoint_at,
    checkpoint_key,
    entry_lines,
    parse_leaf,
)
from shared.reader import iter_history, latest_seq
from shared.rows import dump_lines
from shared.storage import ObjectStore
from shared.tables import TableSpec


@dataclass(frozen=True)
class HistoryView:
    """Committed history as of a checkpoint and the entries read after it."""

    store: ObjectStore
    spec: TableSpec
    checkpoint: IndexCheckpoint
    entries: tuple[LogEntry, ...]

    def lines(self, keys: set[int] | None = None) -> list[Line]:
        """The index lines of `keys` (None: every key), in full-scan order."""
        leaves = self.checkpoint.leaves
        wanted = range(len(leaves)) if keys is None else {self.checkpoint.leaf_of(k) for k in keys}
        found = [
            line
            for i in sorted(wanted)
            if (ref := leaves[i].key) is not None
            for line in parse_leaf(self.store.get(ref).data)
            if keys is None or line.key in keys
        ]
        found += [line for line in self._entry_lines() if keys is None or line.key in keys]
        return sorted(found, key=lambda line: (line.origin, line.position))

    def rows(self, keys: set[int] | None = None) -> list[HistoryRow]:
        return history_rows(self.spec, self.lines(keys), f"index of {self.spec.name}")

    def totals(self) -> tuple[int, int]:
        """History objects and history rows, as a listing would count them."""
        objects = self.checkpoint.history_objects + sum(1 for e in self.entries if e.history_key)
        rows = self.checkpoint.history_rows + sum(len(e.history) for e in self.entries)
        return objects, rows

    def _entry_lines(self) -> list[Line]:
        return [line for entry in self.entries for line in entry_lines(self.spec, entry)]


def history_rows(spec: TableSpec, lines: Iterable[Line], source: str) -> list[HistoryRow]:
    return load_history(spec, dump_lines([line.text for line in lines]), source)


def read_checkpoint(store: ObjectStore, table: str, seq: int) -> IndexCheckpoint | None:
    found = store.get_if_exists(checkpoint_key(table, seq))
    return None if found is None else IndexCheckpoint.model_validate_json(found.data)


def open_view(
    store: ObjectStore, spec: TableSpec, head: int, *, through: int | None = None
) -> HistoryView | None:
    """The view of a state that reflects entry `head`: its checkpoint and the entries after it
    through `through` (None: every entry committed). None: no checkpoint to start from."""
    start = checkpoint_at(head)
    checkpoint = read_checkpoint(store, spec.name, start) if start else None
    if checkpoint is None:
        return None
    entries = entries_after(store, spec.name, start, through)
    return HistoryView(store, spec, checkpoint, tuple(entries))


def committed_history(
    store: ObjectStore, spec: TableSpec, keys: set[int] | None = None
) -> list[HistoryRow]:
    """Every committed history row of `keys` (None: all), in the order a full scan gives."""
    view = open_view(store, spec, latest_seq(store, spec))
    if view is not None:
        return view.rows(keys)
    return [
        item
        for _, items in iter_history(store, spec)
        for item in items
        if keys is None or getattr(item.row, spec.primary_key) in keys
    ]


def history_totals(store: ObjectStore, spec: TableSpec) -> tuple[int, int]:
    """How many history objects and rows the table has (what `status` shows)."""
    view = open_view(store, spec, latest_seq(store, spec))
    if view is not None:
        return view.totals()
    counts = [len(items) for _, items in iter_history(store, spec)]
    return len(counts), sum(counts)
