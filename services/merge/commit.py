"""The commit log of one table: read the state, commit an entry, copy entries to latest.

docs/merge_protocol.md is the argument; this module is its code. Entry n is created with
`If-None-Match: *`, so exactly one batch commits at each position, and only on the state after
entry n-1. latest and history objects are copies of entries: a history object is written (once,
create-only) before the latest that reflects its entry, so "latest reflects entry m" implies
"every history object of entries <= m exists". latest's own write is conditional on the object
read; a one-file latest's ETag is a digest of its rows, so a copier that read an older latest
can pass `If-Match` after others moved it on (an ABA) and leave an older, still-consistent copy:
after every such write the next entry is looked for and, if there, copied too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from services.merge.indexer import Indexer
from services.merge.once import create_once
from services.merge.state import TableState, state_from
from shared.commitlog import (
    BATCH_METADATA,
    SEQ_METADATA,
    Layout,
    LogEntry,
    entry_key,
    read_entry,
)
from shared.layout import latest_key, latest_manifest_key
from shared.rows import dump_lines
from shared.storage import PreconditionFailedError, StoredObject
from shared.tables import TableSpec

if TYPE_CHECKING:
    from shared.storage import ObjectStore

# How far the functions' clocks (an entry's `committed_at`) may be behind S3's (an object's
# LastModified); only the search for a batch's own entry relies on it.
CLOCK_MARGIN = timedelta(minutes=5)


class LatestContentionError(Exception):
    """latest kept moving while this merge copied the log to it; SQS will redeliver."""


class CommitLog:
    """The log entries of one table and the latest they are copied to."""

    def __init__(self, store: ObjectStore, spec: TableSpec, retries: int) -> None:
        self.store = store
        self.spec = spec
        self.retries = retries
        self.indexer = Indexer(store, spec, self.entry)

    # ---- reading ------------------------------------------------------------------------

    def read_state(self) -> TableState:
        """latest as stored (one GET), in the registry's layout or else the other one."""
        single, manifest = latest_key(self.spec.name), latest_manifest_key(self.spec.name)
        first, second = (manifest, single) if self.spec.rows_per_partition else (single, manifest)
        found = self.store.get_if_exists(first) or self.store.get_if_exists(second)
        return state_from(self.spec, found)

    def entry(self, seq: int) -> LogEntry | None:
        return read_entry(self.store, self.spec.name, seq)

    def roll_forward(self, state: TableState) -> TableState:
        """The state after every entry committed so far (reads until an entry is missing)."""
        while (entry := self.entry(state.seq + 1)) is not None:
            state = state.apply(entry)
        return state

    def find(self, batch: str, *, since: datetime, below: int) -> LogEntry | None:
        """The entry of `batch` at or below `below`, searching back to the first entry
        committed before `since` (the batch's source object was created then: no entry
        before can hold it). A margin covers clock skew between S3 and the functions."""
        for seq in range(below, 0, -1):
            entry = self.entry(seq)
            if entry is None or entry.committed_at < since - CLOCK_MARGIN:
                return None
            if entry.batch == batch:
                return entry
        return None

    # ---- committing ---------------------------------------------------------------------

    def try_commit(self, entry: LogEntry) -> bool:
        """Create entry `entry.seq`; False when another batch holds that position."""
        return create_once(
            self.store, entry_key(self.spec.name, entry.seq), entry.model_dump_json().encode()
        )

    # ---- copying entries to history and latest ------------------------------------------

    def materialize(self, state: TableState) -> TableState:
        """Copy the state's pending entries to history and latest, then (one file) make sure
        no later entry was overwritten by an ABA; returns the state latest now holds."""
        for _ in range(self.retries + 1):
            if not state.pending:
                return state
            for entry in state.pending:
                self._write_history(entry)
            self.indexer.write_through(state)  # before latest: L4
            written = self._write_latest(state)
            if written is None:  # latest moved: start again from what it holds
                reread = self.read_state()
                # entries it reflects now were copied (perhaps by us: a write whose answer
                # was lost); their retired objects may still be there
                self._drop_replaced([e for e in state.pending if e.seq <= reread.seq], check=True)
                state = self.roll_forward(reread)
                continue
            self._drop_replaced(state.pending)
            state = state.materialized(written)
            if state.layout is Layout.SINGLE:
                state = self.roll_forward(state)  # usually one GET that finds nothing
        if state.pending:
            raise LatestContentionError(
                f"{self.spec.name}: latest kept moving while copying entry {state.seq}"
            )
        return state

    def _write_history(self, entry: LogEntry) -> None:
        if not entry.history_key:
            return
        # copied before, if it exists: the same bytes, from the same entry
        create_once(self.store, entry.history_key, dump_lines(entry.history))

    def _write_latest(self, state: TableState) -> StoredObject | None:
        """Write latest as `state` conditionally on the object read; None if that failed or
        latest already reflects this state or a later one."""
        head = state.head
        if head is None or head.key != state.key:
            head = self.store.get_if_exists(state.key)  # a layout switch: the other form
            if head is not None and int(head.metadata.get(SEQ_METADATA, "0")) >= state.seq:
                return None
        data = self._latest_bytes(state)
        metadata = {SEQ_METADATA: str(state.seq), BATCH_METADATA: state.pending[-1].batch}
        try:
            written = self.store.put(
                state.key,
                data,
                if_match=None if head is None else head.etag,
                create_only=head is None,
                metadata=metadata,
            )
        except PreconditionFailedError:
            return None
        return StoredObject(
            key=state.key,
            data=data,
            etag=written.etag,
            version_id=written.version_id,
            last_modified=datetime.now(UTC),
            metadata=metadata,
        )

    def _latest_bytes(self, state: TableState) -> bytes:
        if state.layout is Layout.PARTITIONED:
            assert state.manifest is not None  # a partitioned state has its manifest
            return state.manifest.model_dump_json(indent=1).encode()
        assert state.single is not None
        return state.single.dump()

    def _drop_replaced(self, entries: Iterable[LogEntry], *, check: bool = False) -> None:
        """Bare deletes: the objects stay as noncurrent versions, which readers holding an
        older manifest still read by versionId (the lifecycle rule expires them). `check`:
        only those still there (another copier may have dropped them: no second marker)."""
        gone = [key for entry in entries for key in entry.replaced]
        if check:
            gone = [key for key in gone if self.store.exists(key)]
        if gone:
            self.store.delete_keys(gone)
