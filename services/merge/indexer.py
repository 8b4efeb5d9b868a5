"""Writes the history index's checkpoints (shared/history_index.py) as entries are copied.

`CommitLog.materialize` calls `write_through` after the entries' history objects and before
the latest that reflects them, so every checkpoint at or below latest's entry exists. Each
checkpoint is built from the one before it and the entries between (the first from the
history objects older than the log), every object create-only and named by its content or
position: a repeat after a crash, or a second copier, writes nothing new.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from services.merge.once import create_once
from services.merge.state import TableState
from shared import history_index
from shared.commitlog import LogEntry
from shared.history_frames import Directory, FrameWriter, bucket_of
from shared.history_index import (
    BucketRef,
    IndexCheckpoint,
    LeafRef,
    Line,
    checkpoint_at,
    checkpoint_key,
    dump_leaf,
    entry_lines,
    leaf_key,
    parse_leaf,
    split_leaf,
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
        checkpoint = self._with(before, lines, before.seq + len(entries), objects)
        data = checkpoint.model_dump_json(indent=1).encode()
        create_once(self.store, checkpoint_key(self.spec.name, checkpoint.seq), data)
        return checkpoint

    def _with(
        self, before: IndexCheckpoint, lines: list[Line], seq: int, objects: int
    ) -> IndexCheckpoint:
        """`before` with `lines` (from `objects` history objects) added: each leaf they fall
        in rewritten (split if it grew), and the frames of their keys' buckets."""
        groups: dict[int, list[Line]] = {}
        for line in lines:
            groups.setdefault(before.leaf_of(line.key), []).append(line)
        leaves: list[LeafRef] = []
        full: dict[int, list[Line]] = {}  # every line of each key the new lines touch
        for i, ref in enumerate(before.leaves):
            if i not in groups and before.frames is not None:
                leaves.append(ref)
                continue
            old = parse_leaf(self.store.get(ref.key).data) if ref.key else []
            merged = sorted(old + groups.get(i, []))
            touched = {line.key for line in merged} if before.frames is None else set()
            touched |= {line.key for line in groups.get(i, [])}
            for line in merged:
                if line.key in touched:
                    full.setdefault(line.key, []).append(line)
            if i not in groups:  # read only to build the first index by time
                leaves.append(ref)
                continue
            for low, high, part in split_leaf(merged, ref.low, ref.high):
                data = dump_leaf(part)
                key = leaf_key(self.spec.name, low, high, data)
                create_once(self.store, key, data, content_type="application/x-ndjson")
                leaves.append(LeafRef(low=low, high=high, key=key, rows=len(part)))
        return IndexCheckpoint(
            table=self.spec.name,
            seq=seq,
            history_objects=before.history_objects + objects,
            history_rows=before.history_rows + len(lines),
            leaves=leaves,
            frames=self._frames(before, full, set(lines) if before.frames is not None else None),
        )

    def _frames(
        self, before: IndexCheckpoint, full: dict[int, list[Line]], new: set[Line] | None
    ) -> list[BucketRef]:
        """The buckets of `before` with the keys of `full` rewritten (`new`: the lines added;
        None: no index by time before, so every line is new to it)."""
        added = {line for lines in full.values() for line in lines} if new is None else new
        refs = {ref.bucket: ref for ref in before.frames or []}
        buckets: dict[int, dict[int, list[Line]]] = {}
        for key, found in full.items():
            buckets.setdefault(bucket_of(key), {})[key] = found
        for bucket, keys in sorted(buckets.items()):
            writer = FrameWriter(self.spec.name, bucket, self._read, self._write)
            old = refs.get(bucket)
            directory = None if old is None else Directory.model_validate_json(self._read(old.key))
            updated = writer.update(directory, keys, added)
            refs[bucket] = BucketRef(bucket=bucket, key=writer.commit(updated))
        return [refs[bucket] for bucket in sorted(refs)]

    def _read(self, key: str) -> bytes:
        return self.store.get(key).data

    def _write(self, key: str, data: bytes) -> None:
        create_once(self.store, key, data)

    def _before_the_log(self) -> IndexCheckpoint:
        """Checkpoint 0 (never written): the history objects from before the commit log."""
        empty = IndexCheckpoint.empty(self.spec.name)
        lines, objects = before_the_log(self.store, self.spec, self._entry)
        return self._with(empty, lines, 0, objects) if objects else empty
