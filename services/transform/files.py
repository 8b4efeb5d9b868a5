"""The warehouse's objects: Parquet files with a generation, and each table's manifest.

Every Parquet write is conditional (create-only, or If-Match the ETag it was based on) and
carries two metadata entries: `generation`, higher than the version it replaces (so a file's
versions are numbered in the order they were committed: the PostgreSQL sink applies them in
that order), and `rows`, its row count. A manifest's counts are read from the files'
metadata when the manifest is written, never carried from before (docs/decisions.md,
2026-12-03 "Rebuild under the live transform's discipline").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from services.transform import parquet
from services.transform.warehouse import WarehouseTable
from shared.storage import BucketStore, ObjectMissingError, PreconditionFailedError, StoredObject

T = TypeVar("T")

PARQUET = "application/vnd.apache.parquet"
GENERATION = "generation"
ROWS = "rows"


class WarehouseConflictError(Exception):
    """A warehouse file kept changing under this transform past the retry budget."""


def generation_of(found: StoredObject | None) -> int:
    """The generation of a file version (0: written before generations, or absent)."""
    if found is None:
        return 0
    text = found.metadata.get(GENERATION, "0")
    return int(text) if text.isdigit() else 0


def manifest_bytes(table: WarehouseTable, files: Mapping[str, int]) -> bytes:
    """The manifest of a table's current files: deterministic JSON."""
    body = {
        "table": table.name,
        "kind": "fact" if table.is_fact else "changes" if table.changes_of else "dimension",
        "files": dict(sorted(files.items())),
        "rows": sum(files.values()),
    }
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def manifest_files(found: StoredObject | None) -> dict[str, int]:
    files: dict[str, int] = json.loads(found.data)["files"] if found else {}
    return files


class WarehouseFiles:
    def __init__(self, store: BucketStore, conflict_retries: int = 5) -> None:
        self.store = store
        self.conflict_retries = conflict_retries

    def put(self, key: str, data: bytes, rows: int, found: StoredObject | None) -> int:
        """Create (only if absent) or replace (only if still `found`); the new generation."""
        generation = self._next_generation(found)
        metadata = {GENERATION: str(generation), ROWS: str(rows)}
        if found is None:
            self.store.put(key, data, create_only=True, metadata=metadata, content_type=PARQUET)
        else:
            self.store.put(key, data, if_match=found.etag, metadata=metadata, content_type=PARQUET)
        return generation

    def _next_generation(self, found: StoredObject | None) -> int:
        """More than the version replaced, and than any earlier version of the key: a hybrid
        clock, the microseconds since the epoch unless the version replaced is numbered
        higher. A file created again (after a rebuild removed it, or a wiped warehouse) is so
        numbered after its earlier versions without reading them (the live transform may not
        list warehouse versions), within the clocks' skew."""
        return max(generation_of(found) + 1, time.time_ns() // 1000)

    def row_count(self, table: WarehouseTable, key: str) -> int | None:
        """The rows of the file's current version (None: it is gone)."""
        try:
            text = self.store.metadata(key).get(ROWS, "")
            if text.isdigit():
                return int(text)
            return len(parquet.decode(table, self.store.get(key).data))
        except ObjectMissingError:
            return None

    def update_manifest(self, table: WarehouseTable, keys: Iterable[str]) -> None:
        """Name `keys` in the manifest with their counts as the files hold them now. Read
        after the manifest, under its If-Match: the last writer of a file runs this after
        its write, so the committed counts are those of the committed files."""
        key = table.manifest_key
        found = self.store.get_if_exists(key)
        files = manifest_files(found)
        merged = dict(files)
        for file_key in keys:
            count = self.row_count(table, file_key)
            if count is None:
                merged.pop(file_key, None)
            else:
                merged[file_key] = count
        if (found is not None and merged == files) or not merged:
            return  # unchanged; or every file gone (the rebuild that removed them commits)
        self.put_manifest(table, merged, found)

    def put_manifest(
        self, table: WarehouseTable, files: Mapping[str, int], found: StoredObject | None
    ) -> None:
        """Commit a manifest conditionally on the one read (`found`); none left: delete it."""
        key = table.manifest_key
        data = manifest_bytes(table, files)
        if not files:
            if found is not None:
                self.store.delete_if_match(key, found.etag)
        elif found is None:
            self.store.put(key, data, create_only=True)
        elif found.data != data:
            self.store.put(key, data, if_match=found.etag)

    def retry(self, attempt: Callable[[], T]) -> T:
        for _ in range(self.conflict_retries):
            try:
                return attempt()
            except PreconditionFailedError:
                continue
        raise WarehouseConflictError(
            f"warehouse files kept changing; gave up after {self.conflict_retries} attempts"
        )
