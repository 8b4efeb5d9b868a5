"""The one way to read a table's current rows and its history from the bucket.

Everything that reads latest or history outside the merge's own commit logic (ingest's
reconcile, operators' status / history / asof, the transform, the demo, tests) goes through
here, so a change to how latest is stored (e.g. key-range partitions) changes one module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from shared.commitlog import SEQ_METADATA
from shared.history import HistoryRow, load_history
from shared.layout import batch_of_key, history_prefix, latest_key, latest_manifest_key
from shared.partitions import PartitionManifest, unpack_partition
from shared.rows import decode_rows
from shared.schemas import RowModel
from shared.storage import ObjectStore
from shared.tables import TableSpec
from shared.versions import (
    Tombstone,
    Version,
    is_tombstone,
    load_latest,
    load_versions,
    versions_of,
)


@dataclass(frozen=True)
class LatestSnapshot:
    """latest's rows (sorted by key) and the ETag they were read at (None: no latest yet)."""

    rows: list[RowModel]
    etag: str | None

    @property
    def exists(self) -> bool:
        return self.etag is not None


def read_latest(store: ObjectStore, spec: TableSpec) -> LatestSnapshot:
    """latest's rows, in either form: a partition manifest (whose ETag the snapshot carries)
    and the partitions it lists, or the single `latest/<table>.json`.

    The manifest wins when both exist (a table that just became partitioned). Partitions are
    read by the version the manifest names, so a merge committing meanwhile cannot tear the
    snapshot: the objects it replaces stay readable as noncurrent versions."""
    rows: list[RowModel] = []
    etag = None
    for part_rows, part_etag in iter_latest(store, spec):
        rows.extend(part_rows)
        etag = part_etag
    return LatestSnapshot(rows=rows, etag=etag)


def latest_commit_key(store: ObjectStore, spec: TableSpec) -> str | None:
    """The object whose write commits latest (its metadata names the batch): the partition
    manifest of a partitioned table, else the single file; None before the first merge."""
    for key in (latest_manifest_key(spec.name), latest_key(spec.name)):
        if store.exists(key):
            return key
    return None


def iter_latest(store: ObjectStore, spec: TableSpec) -> Iterator[tuple[list[RowModel], str]]:
    """latest's rows a partition at a time (one partition in memory), in key order, each with
    the ETag of the object that commits them (the manifest, or the single file)."""
    for versions, etag in iter_latest_versions(store, spec):
        yield [version.row for version in versions], etag


def read_latest_versions(store: ObjectStore, spec: TableSpec) -> list[Version]:
    """latest's rows with when each was observed (its `_observed`), in key order; [] before
    the first merge. For readers that order versions (`history`, `asof`)."""
    return [version for versions, _ in iter_latest_versions(store, spec) for version in versions]


def iter_latest_versions(
    store: ObjectStore, spec: TableSpec
) -> Iterator[tuple[list[Version], str]]:
    """`iter_latest` with each row's observation: a partition at a time, with the ETag of the
    object that commits it. latest is ours: a row that fails is a bug or a schema change
    (load_versions raises)."""
    for data, source, etag in _latest_files(store, spec):
        yield ([] if data is None else load_versions(spec, data, source)), etag


def read_tombstones(store: ObjectStore, spec: TableSpec) -> list[Tombstone]:
    """latest's tombstone lines (the keys deleted at the source), in either layout, in key
    order; the other readers here give live rows only."""
    return [
        tomb
        for data, source, _ in _latest_files(store, spec)
        if data is not None
        for tomb in load_latest(spec, data, source)[1]
    ]


def latest_versions_of(store: ObjectStore, spec: TableSpec, keys: set[int]) -> list[Version]:
    """latest's live versions of `keys` alone, in key order: only the partitions holding
    them are read, and only their rows validated (`history KEY`)."""
    pk = spec.primary_key
    return [
        version
        for data, source, _ in _latest_files(store, spec, keys)
        if data is not None
        for version in versions_of(
            spec,
            [r for r in decode_rows(data, source) if not is_tombstone(r) and r.get(pk) in keys],
            source,
        )
    ]


def _latest_files(
    store: ObjectStore, spec: TableSpec, keys: set[int] | None = None
) -> Iterator[tuple[bytes | None, str, str]]:
    """Each file of latest (the single file, or each partition by the version its manifest
    names; with `keys`, only those holding one) with its address and the ETag of the object
    that commits it; an empty manifest gives one `None`, so readers still learn its ETag."""
    found = store.get_if_exists(latest_manifest_key(spec.name))
    if found is None:
        key = latest_key(spec.name)
        stored = store.get_if_exists(key)
        if stored is not None:
            yield stored.data, f"s3://{store.bucket}/{key}", stored.etag
        return
    manifest = PartitionManifest.model_validate_json(found.data)
    if not manifest.partitions:
        yield None, "", found.etag
    for part in manifest.partitions:
        if keys is not None and not any(part.low <= key <= part.high for key in keys):
            continue
        data = unpack_partition(store.get(part.key, part.version_id).data)
        yield data, f"s3://{store.bucket}/{part.key}", found.etag


def history_keys(store: ObjectStore, spec: TableSpec) -> list[str]:
    """The table's history objects, oldest first (their names start with the batch's stamp)."""
    return sorted(store.keys(history_prefix(spec.name)))


def batch_history_keys(store: ObjectStore, spec: TableSpec, batches: set[str]) -> list[str]:
    """The history objects the given batches wrote, oldest first."""
    return [key for key in history_keys(store, spec) if batch_of_key(key) in batches]


def read_history(store: ObjectStore, spec: TableSpec, key: str) -> list[HistoryRow]:
    """The rows of one history object (e.g. the one a HistoryAppended event names)."""
    return load_history(spec, store.get(key).data, f"s3://{store.bucket}/{key}")


def iter_history(store: ObjectStore, spec: TableSpec) -> Iterator[tuple[str, list[HistoryRow]]]:
    """Each history object of the table with its rows, oldest first, one object in memory."""
    for key in history_keys(store, spec):
        yield key, read_history(store, spec, key)


def latest_seq(store: ObjectStore, spec: TableSpec) -> int:
    """The commit log entry latest reflects (its `merge-seq`); 0 before the first merge or
    for a latest written before the log."""
    commit_key = latest_commit_key(store, spec)
    if commit_key is None:
        return 0
    seq = store.metadata(commit_key).get(SEQ_METADATA, "")
    return int(seq) if seq.isdigit() else 0
