"""A BucketStore over a local directory: the project's own code, with S3 swapped for files.

Same methods and errors as `shared.storage.BucketStore`; one current version per key (enough
for a merge: it reads and deletes the version it names). Every call is counted as the S3
request it stands for, with the bytes read and written, so the benchmark can report them.
The benchmark's merges run on it, and `ingestctl query --snapshot` reads the folder the demo
leaves (ops/snapshot.py).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.storage import (
    BucketStore,
    ObjectMissingError,
    ObjectVersion,
    PreconditionFailedError,
    StoredObject,
    WriteResult,
)


@dataclass
class Traffic:
    """S3 requests a store made, and the bytes it moved."""

    requests: int = 0
    bytes_read: int = 0
    bytes_written: int = 0


class FolderStore(BucketStore):
    """Objects as files under `root`; their ETag, version and metadata in a sidecar file."""

    def __init__(self, root: Path, bucket: str = "local") -> None:
        super().__init__(bucket)
        self.root = root
        self.traffic = Traffic()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"key {key!r} leaves the folder {self.root}")
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / ".meta" / (key + ".json")

    def _read_meta(self, key: str) -> dict[str, Any]:
        path = self._meta_path(key)
        if not path.exists():  # a file put there by hand: an ETag from its size and time
            stat = self._path(key).stat()
            return {
                "etag": f'"{stat.st_size}-{stat.st_mtime_ns}"',
                "version_id": "v0",
                "metadata": {},
            }
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def get(self, key: str, version_id: str | None = None) -> StoredObject:
        self.traffic.requests += 1
        path = self._path(key)
        if not path.is_file():
            raise ObjectMissingError(f"{path} ({version_id})")
        data = path.read_bytes()
        self.traffic.bytes_read += len(data)
        meta = self._read_meta(key)
        return StoredObject(
            key=key,
            data=data,
            etag=str(meta["etag"]),
            version_id=str(meta["version_id"]),
            last_modified=_modified(path),
            metadata=dict(meta["metadata"]),
        )

    def metadata(self, key: str, version_id: str | None = None) -> dict[str, str]:
        self.traffic.requests += 1
        if not self._path(key).is_file():
            raise ObjectMissingError(key)
        return dict(self._read_meta(key)["metadata"])

    def exists(self, key: str) -> bool:
        self.traffic.requests += 1
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
        self.traffic.requests += 1
        path = self._path(key)
        if create_only and path.exists():
            raise PreconditionFailedError(key)
        if if_match is not None and (not path.exists() or self._read_meta(key)["etag"] != if_match):
            raise PreconditionFailedError(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.traffic.bytes_written += len(data)
        # S3 computes ETags server-side; here a fresh id per write does the same job (If-Match)
        version = uuid.uuid4().hex
        meta = {"etag": f'"{version}"', "version_id": version, "metadata": metadata or {}}
        self._meta_path(key).parent.mkdir(parents=True, exist_ok=True)
        self._meta_path(key).write_text(json.dumps(meta))
        return WriteResult(key=key, etag=str(meta["etag"]), version_id=str(meta["version_id"]))

    def iter_versions(self, key: str) -> Iterator[ObjectVersion]:
        self.traffic.requests += 1
        path = self._path(key)
        if path.is_file():
            meta = self._read_meta(key)
            yield ObjectVersion(
                key=key,
                version_id=str(meta["version_id"]),
                etag=str(meta["etag"]),
                last_modified=_modified(path),
                is_latest=True,
                size=path.stat().st_size,
            )

    def delete_version(self, key: str, version_id: str) -> None:
        self.delete(key)

    def delete(self, key: str) -> None:
        self.traffic.requests += 1
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)

    def delete_keys(self, keys: list[str]) -> None:
        self.traffic.requests += (len(keys) + 999) // 1000
        for key in keys:
            self._path(key).unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        self.traffic.requests += 1
        found = []
        for folder, _, files in os.walk(self.root):
            for name in files:
                key = os.path.relpath(os.path.join(folder, name), self.root)
                if key.startswith(prefix) and not key.startswith(".meta"):
                    found.append(key)
        yield from sorted(found)


def _modified(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
