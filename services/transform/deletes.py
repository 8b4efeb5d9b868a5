"""The deleted rows of a source table: latest's tombstone lines and the rows they ended.

A tombstone names the batch whose history object holds the key's last row marked deleted
(docs/merge_protocol.md, "Tombstones"), so only the history objects the tombstones name are
read, never all history. A tombstone whose batch holds no deleted row of its key (a delete of
a key never seen live) gives no member: there is no last row to keep.
"""

from __future__ import annotations

from services.transform.warehouse import Deleted
from shared.history import HistoryRow
from shared.reader import batch_history_keys, read_history, read_tombstones
from shared.storage import ObjectStore
from shared.tables import TableSpec
from shared.versions import Tombstone


def deleted_rows(store: ObjectStore, spec: TableSpec) -> dict[int, Deleted]:
    """Each deleted key's last row and when it was deleted, from the batches that did it."""
    tombs = {t.key: t for t in read_tombstones(store, spec)}
    if not tombs:
        return {}
    found: dict[int, Deleted] = {}
    for key in batch_history_keys(store, spec, {t.batch for t in tombs.values()}):
        for item in read_history(store, spec, key):
            _keep(found, tombs, spec, item)
    return found


def _keep(
    found: dict[int, Deleted], tombs: dict[int, Tombstone], spec: TableSpec, item: HistoryRow
) -> None:
    key = getattr(item.row, spec.primary_key)
    tomb = tombs.get(key)
    if tomb is None or item.deleted_at is None or item.batch != tomb.batch:
        return
    if key not in found or found[key].at <= item.deleted_at:
        found[key] = Deleted(item.row, tomb.deleted_at)
