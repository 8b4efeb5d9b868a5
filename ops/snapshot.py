"""A bucket's objects kept in a folder, one file per key: what the demo leaves behind.

The local runtime's bucket lives in moto's memory and goes when the demo ends; the demo copies
the objects `ingestctl query` reads (latest, the warehouse, the schema state) into `.demo/bucket`
first, so `ingestctl query --snapshot .demo/bucket "SQL"` reads them after it, through the
same `ObjectStore` port as a real bucket. A snapshot keeps each key's current bytes only: no
versions (a read of a version gives the one copy) and no metadata.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from shared.layout import Area
from shared.storage import ObjectMissingError, ObjectStore, ObjectVersion, StoredObject, WriteResult

# What a query reads: latest, the warehouse and change tables, the tables' schema state.
QUERY_PREFIXES = (f"{Area.LATEST}/", f"{Area.WAREHOUSE}/", f"{Area.STATE}/schema/")
DEMO_SNAPSHOT = Path(".demo/bucket")


class FolderStore:
    """An `ObjectStore` over a folder: key `a/b.json` is the file `<root>/a/b.json`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bucket = root.name

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"key {key!r} leaves the folder")
        return path

    def get(self, key: str, version_id: str | None = None) -> StoredObject:
        path = self._path(key)
        if not path.is_file():
            raise ObjectMissingError(f"{path} ({version_id})")
        data = path.read_bytes()
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        return StoredObject(key, data, _etag(data), None, modified, {})

    def get_if_exists(self, key: str) -> StoredObject | None:
        try:
            return self.get(key)
        except ObjectMissingError:
            return None

    def metadata(self, key: str, version_id: str | None = None) -> dict[str, str]:
        self.get(key, version_id)
        return {}

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        create_only: bool = False,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> WriteResult:
        """Write the file (a snapshot is written whole by `copy_objects`: no conditions)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return WriteResult(key, _etag(data), None)

    def versions(self, key: str) -> list[ObjectVersion]:
        return list(self.iter_versions(key))

    def iter_versions(self, key: str) -> Iterator[ObjectVersion]:
        found = self.get_if_exists(key)
        if found is not None:
            yield ObjectVersion(key, "null", found.etag, found.last_modified, True, len(found.data))

    def delete_version(self, key: str, version_id: str) -> None:
        self.delete(key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)

    def keys(self, prefix: str) -> Iterator[str]:
        if not self.root.is_dir():
            return
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        yield from sorted(key for key in found if key.startswith(prefix))


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


def copy_objects(
    source: ObjectStore, folder: Path, prefixes: Iterable[str] = QUERY_PREFIXES
) -> int:
    """Replace `folder` with the current objects of `source` under `prefixes`; how many."""
    if folder.exists():
        shutil.rmtree(folder)
    target = FolderStore(folder)
    copied = 0
    for prefix in prefixes:
        for key in list(source.keys(prefix)):
            target.put(key, source.get(key).data)
            copied += 1
    return copied
