"""A table's committed state as a merge holds it in memory: latest after log entry `seq`.

Read from latest (one GET: the object the registry's layout names, else the other form), then
rolled forward by the log entries latest does not reflect yet (`apply`). Pure apart from the
reads its caller makes; docs/merge_protocol.md, "State".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.merge.rowsfile import RowsFile
from shared.commitlog import BATCH_METADATA, SEQ_METADATA, Layout, LogEntry
from shared.layout import latest_key, latest_manifest_key
from shared.partitions import PartitionManifest
from shared.storage import StoredObject
from shared.tables import TableSpec


@dataclass(frozen=True)
class TableState:
    """latest as of entry `seq`; `head` is the latest object read (the If-Match of the next
    copy), `pending` the entries applied since it was read (not yet copied to latest)."""

    spec: TableSpec
    seq: int
    layout: Layout
    head: StoredObject | None
    single: RowsFile | None = None
    manifest: PartitionManifest | None = None
    pending: tuple[LogEntry, ...] = field(default=())

    @property
    def key(self) -> str:
        """The object that holds this state's latest."""
        if self.layout is Layout.PARTITIONED:
            return latest_manifest_key(self.spec.name)
        return latest_key(self.spec.name)

    @property
    def head_batch(self) -> str | None:
        return None if self.head is None else self.head.metadata.get(BATCH_METADATA)

    def apply(self, entry: LogEntry) -> TableState:
        """The state after `entry` (which must be entry seq + 1)."""
        if entry.seq != self.seq + 1:
            raise ValueError(f"{self.spec.name}: entry {entry.seq} does not follow {self.seq}")
        pending = (*self.pending, entry)
        if entry.layout is Layout.PARTITIONED:
            return replace(
                self,
                seq=entry.seq,
                layout=entry.layout,
                single=None,
                manifest=entry.manifest,
                pending=pending,
            )
        if self.manifest is not None:
            raise ValueError(f"{self.spec.name}: entry {entry.seq} leaves partitions (unsupported)")
        current = self.single or RowsFile.empty(self.spec, self.key)
        single = current.replaced({**entry.upserts, **entry.removed})
        return replace(self, seq=entry.seq, layout=Layout.SINGLE, single=single, pending=pending)

    def materialized(self, head: StoredObject) -> TableState:
        """This state, now written to latest as `head`."""
        return replace(self, head=head, pending=())


def state_from(spec: TableSpec, found: StoredObject | None) -> TableState:
    """The state latest's object holds (None: no latest yet, the state before entry 1)."""
    if found is None:
        layout = Layout.SINGLE if spec.rows_per_partition is None else Layout.PARTITIONED
        return TableState(spec, 0, layout, None, single=RowsFile.empty(spec, latest_key(spec.name)))
    seq = int(found.metadata.get(SEQ_METADATA, "0"))  # no seq: written before the log
    if found.key == latest_manifest_key(spec.name):
        manifest = PartitionManifest.model_validate_json(found.data)
        return TableState(spec, seq, Layout.PARTITIONED, found, manifest=manifest)
    single = RowsFile.parse(spec, found.data, found.key)
    return TableState(spec, seq, Layout.SINGLE, found, single=single)
