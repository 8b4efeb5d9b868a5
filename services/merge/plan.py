"""What a batch would commit on a given state: the merge rules applied to the rows it touches.

One file: the staged keys' rows are found by bisecting latest's bytes, and the entry carries
the rows it writes. Partitions: each partition the batch touches is read, spliced and written
as a new immutable object (invisible until an entry's manifest names it), and the entry
carries the new manifest. A table whose registry asks for partitions while latest is one file
moves every row into partitions with the first batch that changes anything (a no-op, such as
a replay, moves nothing). Which rows go to latest never depends on history; which superseded
versions go to history does, for the keys `keys_needing_history` names (rare), answered by
`known`. A deleted key's row is replaced by its tombstone line (shared/versions.py): in the
entry's `removed` (one file) or in the partition the manifest names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.merge.once import create_or_find
from services.merge.rowsfile import RowsFile
from services.merge.rules import Known, MergeResult, keys_needing_history, merge, primary_key
from services.merge.source import SourceVersion
from services.merge.staged import Staged
from services.merge.state import TableState
from shared.commitlog import ENTRY_SCHEMA_VERSION, Layout, LogEntry
from shared.events import MergeCounts
from shared.history import history_row_json
from shared.layout import history_key, latest_key, latest_partition_key
from shared.partitions import (
    PartitionManifest,
    PartitionRef,
    pack_partition,
    partition_low,
    unpack_partition,
)
from shared.tables import AUTO_PARTITION_ROWS, TableSpec
from shared.versions import tombstone_json, version_json

if TYPE_CHECKING:
    from shared.storage import ObjectStore

# The history row texts already committed for some keys (docs/merge_protocol.md, "History").
KnownHistory = Callable[[TableState, set[int]], Known]


@dataclass(frozen=True)
class Batch:
    """A validated batch: its source, its rows and how it is known."""

    source: SourceVersion
    rows: list[Staged]


def latest_lines(spec: TableSpec, result: MergeResult) -> dict[int, str]:
    """The lines a result writes into latest, by key: rows, and tombstones of deleted keys."""
    lines = {key: version_json(spec, v) for key, v in result.written.items()}
    lines.update({key: tombstone_json(spec, t) for key, t in result.removed.items()})
    return lines


@dataclass(frozen=True)
class Plan:
    result: MergeResult
    entry: LogEntry | None  # None: nothing to commit


class Planner:
    """Plans batches of one table; writes the partition objects a plan needs."""

    def __init__(self, store: ObjectStore, known: KnownHistory) -> None:
        self.store = store
        self.known = known

    def plan(self, state: TableState, batch: Batch) -> Plan:
        spec = state.spec
        if state.layout is Layout.SINGLE:
            assert state.single is not None
            result = self._decide(state, state.single, batch.rows, batch)
            # a no-op (a replay, a twin) moves nothing; a row that cannot be merged nothing
            if not result.changes_anything or result.problems:
                return Plan(result, None)
            width = partition_width(spec, state.single)
            if width is None:
                upserts = {key: version_json(spec, v) for key, v in result.written.items()}
                removed = {key: tombstone_json(spec, t) for key, t in result.removed.items()}
                entry = self._entry(state, batch, result, upserts=upserts, removed=removed)
                return Plan(result, entry)
            # partitions asked for, or the file grew past its size: this change moves every
            # row into them
            result, manifest, replaced = self._partitioned(state, batch, width)
        else:
            result, manifest, replaced = self._partitioned(state, batch, None)
        if result.problems or (not result.changes_anything and state.layout is Layout.PARTITIONED):
            return Plan(result, None)
        return Plan(result, self._entry(state, batch, result, manifest=manifest, replaced=replaced))

    def _decide(
        self, state: TableState, current: RowsFile, staged: list[Staged], batch: Batch
    ) -> MergeResult:
        spec, source = state.spec, batch.source
        held = current.held({item.key for item in staged})
        needed = keys_needing_history(spec, held, staged)
        known = self.known(state, needed) if needed else Known()
        return merge(spec, held, staged, None, source.batch, known, source.key)

    def _partitioned(
        self, state: TableState, batch: Batch, moving_width: int | None
    ) -> tuple[MergeResult, PartitionManifest, list[str]]:
        """Each partition the batch touches (every one, when rows move in from one file, in
        partitions of `moving_width`)."""
        spec, manifest = state.spec, state.manifest
        width = manifest.rows_per_partition if manifest else moving_width or spec.rows_per_partition
        assert width is not None  # a partitioned table has a width
        listed = manifest.by_low() if manifest else {}
        groups: dict[int, list[Staged]] = {}
        for item in batch.rows:
            groups.setdefault(partition_low(item.key, width), []).append(item)
        lows = set(groups)
        moving = state.single if state.layout is Layout.SINGLE else None
        span = moving.first_and_last_keys() if moving is not None else None
        if span is not None:
            lows |= set(range(partition_low(span[0], width), span[1] + 1, width))
        combined = MergeResult()
        refs = dict(listed)
        replaced = [latest_key(spec.name)] if moving is not None and state.head else []
        for low in sorted(lows):
            high = low + width - 1
            if moving is not None:
                current = moving.slice(low, high)
            elif low in listed:
                ref = listed[low]
                stored = self.store.get(ref.key, ref.version_id)
                current = RowsFile.parse(spec, unpack_partition(stored.data), ref.key)
            else:
                current = RowsFile.empty(spec, f"{state.key} [{low}-{high}]")
            decided = self._decide(state, current, groups.get(low, []), batch)
            combined.extend(decided)
            if combined.problems:  # nothing is written for a batch that is refused
                break
            lines = latest_lines(spec, decided)
            if not lines and (moving is None or current.is_empty):
                continue
            new = current.replaced(lines)
            data = pack_partition(new.dump())
            digest = hashlib.blake2b(data, digest_size=6).hexdigest()
            key = latest_partition_key(spec.name, low, high, batch.source.batch, digest)
            version = create_or_find(self.store, key, data, "application/gzip")
            refs[low] = PartitionRef(low=low, high=high, key=key, version_id=version, rows=new.rows)
            if low in listed:
                replaced.append(listed[low].key)
        combined.history.sort(key=lambda h: (primary_key(spec, h.row), h.row.last_updated))
        new_manifest = PartitionManifest(
            table=spec.name,
            batch=batch.source.batch,
            seq=state.seq + 1,
            rows_per_partition=width,
            partitions=[refs[low] for low in sorted(refs)],
        )
        return combined, new_manifest, replaced

    def _entry(
        self,
        state: TableState,
        batch: Batch,
        result: MergeResult,
        *,
        upserts: dict[int, str] | None = None,
        removed: dict[int, str] | None = None,
        manifest: PartitionManifest | None = None,
        replaced: list[str] | None = None,
    ) -> LogEntry:
        spec, source = state.spec, batch.source
        history = [history_row_json(spec, item) for item in result.history]
        return LogEntry(
            schema_version=ENTRY_SCHEMA_VERSION,
            seq=state.seq + 1,
            table=spec.name,
            batch=source.batch,
            source=source.ref,
            layout=Layout.PARTITIONED if manifest is not None else Layout.SINGLE,
            upserts=upserts or {},
            removed=removed or {},
            manifest=manifest,
            replaced=replaced or [],
            history=history,
            history_key=history_key(spec.name, source.ref.stamp, source.batch) if history else None,
            rows=len(batch.rows),
            counts=counts_of(result),
            keys_written=result.keys_written,
            keys_deleted=result.keys_deleted,
            committed_at=datetime.now(UTC),
        )


def partition_width(spec: TableSpec, single: RowsFile) -> int | None:
    """The partitions a one-file latest moves into with its next change: the registry's, or
    AUTO_PARTITION_ROWS once the file passed the table's `partition_after_bytes`; None: it
    stays one file."""
    if spec.rows_per_partition is not None:
        return spec.rows_per_partition
    limit = spec.partition_after_bytes
    return AUTO_PARTITION_ROWS if limit is not None and single.size > limit else None


def counts_of(result: MergeResult) -> MergeCounts:
    return MergeCounts(
        inserted=len(result.inserted),
        updated=len(result.updated),
        unchanged=len(result.unchanged),
        late=len(result.late),
        deleted=len(result.deleted),
        history_rows=len(result.history),
        history_deleted=sum(1 for h in result.history if h.deleted),
    )
