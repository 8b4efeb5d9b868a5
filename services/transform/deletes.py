"""The deleted rows of a source table: latest's tombstone lines and the rows they ended.

A tombstone names the batch that deleted its key; that batch's history object (its key ends
in `_<batch>.json`, shared/layout.py) holds the key's last row marked deleted. So only the
history objects the tombstones name are read, never all history. A tombstone whose batch
holds no deleted row of its key (a delete of a key never seen live, a replayed delete) gives
no member: there is no last row to keep.
"""

from __future__ import annotations

from services.transform.warehouse import Deleted
from shared.history import HistoryRow
from shared.layout import latest_key, latest_manifest_key
from shared.partitions import PartitionManifest
from shared.reader import history_keys, read_history
from shared.storage import ObjectStore
from shared.tables import TableSpec
from shared.versions import Tombstone, load_latest


def tombstones(store: ObjectStore, spec: TableSpec) -> list[Tombstone]:
    """latest's tombstone lines, in either layout (shared.reader gives live rows only)."""
    found = store.get_if_exists(latest_manifest_key(spec.name))
    if found is None:
        stored = store.get_if_exists(latest_key(spec.name))
        return [] if stored is None else load_latest(spec, stored.data, spec.name)[1]
    manifest = PartitionManifest.model_validate_json(found.data)
    return [
        tomb
        for part in manifest.partitions
        for tomb in load_latest(spec, store.get(part.key, part.version_id).data, part.key)[1]
    ]


def deleted_rows(store: ObjectStore, spec: TableSpec) -> dict[int, Deleted]:
    """Each deleted key's last row and when it was deleted, from the batches that did it."""
    tombs = {t.key: t for t in tombstones(store, spec)}
    if not tombs:
        return {}
    batches = {t.batch for t in tombs.values()}
    keys = [k for k in history_keys(store, spec) if k.rsplit("_", 1)[-1][:-5] in batches]
    found: dict[int, Deleted] = {}
    for key in keys:
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
