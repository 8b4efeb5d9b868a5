"""Writes the history index's checkpoints (shared/history_index.py) as entries are copied.

`CommitLog.materialize` calls `write_through` after the entries' history objects and before
the latest that reflects them, so every checkpoint at or below latest's entry exists. Each
checkpoint is built from the one before it and the entries between (the first from the
history objects older than the log) by `services/merge/index_fold.py`, every object
create-only and named by its content or position: a repeat after a crash, or a second
copier, writes nothing new.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from services.merge.index_fold import FoldBuild, Folds
from services.merge.once import create_once
from services.merge.state import TableState
from shared import history_index
from shared.commitlog import LogEntry
from shared.history_index import (
    IndexCheckpoint,
    Line,
    checkpoint_at,
    checkpoint_key,
    entry_lines,
    folds_at,
)
from shared.history_lookup import before_the_log, read_checkpoint
from shared.tables import TableSpec

if TYPE_CHECKING:
    from shared.storage import ObjectStore


class Indexer:
    """Builds and writes the checkpoints of one table's history index."""

    def __init__(
        self, store: ObjectStore, spec: TableSpec, entry: Callable[[int], LogEntry | None]
    ) -> None:
        self.store = store
        self.spec = spec
        self.entry = entry
        self.known: dict[int, LogEntry] = {}

    def write_through(self, state: TableState) -> None:
        """Every checkpoint past the entry latest reflects, up to the state's own."""
        every = history_index.INDEX_EVERY
        self.known.update((entry.seq, entry) for entry in state.pending)
        head = state.seq - len(state.pending)
        for seq in range(checkpoint_at(head) + every, state.seq + 1, every):
            self.ensure(seq)

    def ensure(self, seq: int) -> IndexCheckpoint:
        """Checkpoint `seq`, written unless it exists (and any missing before it)."""
        checkpoint = self._newest_at_or_below(seq) or self._before_the_log()
        while checkpoint.seq < seq:
            checkpoint = self._next(checkpoint)
        return checkpoint

    def _newest_at_or_below(self, seq: int) -> IndexCheckpoint | None:
        every = history_index.INDEX_EVERY
        for at in range(seq, 0, -every):
            found = read_checkpoint(self.store, self.spec.name, at)
            if found is not None:
                return found
        return None

    def _entry(self, seq: int) -> LogEntry | None:
        if seq not in self.known and (entry := self.entry(seq)) is not None:
            self.known[seq] = entry
        return self.known.get(seq)

    def _next(self, before: IndexCheckpoint) -> IndexCheckpoint:
        """The checkpoint `INDEX_EVERY` entries after `before` (all committed: the caller
        copies entries up to it)."""
        every = history_index.INDEX_EVERY
        entries = [self._entry(seq) for seq in range(before.seq + 1, before.seq + every + 1)]
        if any(entry is None for entry in entries):
            raise ValueError(f"{self.spec.name}: an entry below {before.seq + every} is missing")
        return self.extend(before, [entry for entry in entries if entry is not None])

    def extend(self, before: IndexCheckpoint, entries: list[LogEntry]) -> IndexCheckpoint:
        """Write the checkpoint of `before` plus the entries that follow it (create-only)."""
        lines = [line for entry in entries for line in entry_lines(self.spec, entry)]
        objects = sum(1 for entry in entries if entry.history_key)
        seq = before.seq + len(entries)
        checkpoint = self._with(before, lines, seq, objects, partial(folds_at, seq))
        create_once(self.store, checkpoint_key(self.spec.name, checkpoint.seq), checkpoint.dump())
        return checkpoint

    def _with(
        self, before: IndexCheckpoint, lines: list[Line], seq: int, objects: int, folds: Folds
    ) -> IndexCheckpoint:
        """`before` with `lines` (from `objects` history objects) added: each leaf and bucket
        with rows to fold folded if `folds` says so, the rest of the rows in a delta."""
        build = FoldBuild(self.store, before, lines, seq, folds)
        leaves = build.leaves()
        frames = build.frames(lines)
        deltas = build.kept_deltas([*leaves, *frames], build.delta())
        return IndexCheckpoint(
            table=self.spec.name,
            seq=seq,
            history_objects=before.history_objects + objects,
            history_rows=before.history_rows + len(lines),
            leaves=leaves,
            frames=frames,
            deltas=deltas,
        )

    def _before_the_log(self) -> IndexCheckpoint:
        """Checkpoint 0 (never written): the history objects from before the commit log."""
        empty = IndexCheckpoint.empty(self.spec.name)
        lines, objects = before_the_log(self.store, self.spec, self._entry)
        return self._with(empty, lines, 0, objects, lambda *_: True) if objects else empty
