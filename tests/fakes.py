"""In-memory fakes of the ports, for unit tests of the protocol without moto.

`MemoryStore` is a versioned bucket that does what the merge relies on S3 for: conditional
writes decided atomically (`If-Match` on the ETag, `If-None-Match: *`), an ETag that is the
MD5 of the bytes (so identical bytes give identical ETags, as S3's do), versions, delete
markers. A `hook` called before every operation lets a test crash or interleave at any call.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.events import EventDetail
from shared.storage import (
    ObjectMissingError,
    ObjectVersion,
    PreconditionFailedError,
    StoredObject,
    WriteResult,
)

Hook = Callable[[str, str], None]  # (operation, key)


@dataclass
class _Version:
    version_id: str
    data: bytes | None  # None: a delete marker
    metadata: dict[str, str]
    last_modified: datetime

    @property
    def etag(self) -> str:
        return '"' + hashlib.md5(self.data or b"").hexdigest() + '"'


@dataclass
class MemoryStore:
    bucket: str = "memory"
    hook: Hook | None = None
    objects: dict[str, list[_Version]] = field(default_factory=dict)  # oldest first
    calls: list[tuple[str, str]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _call(self, operation: str, key: str) -> None:
        self.calls.append((operation, key))
        if self.hook is not None:
            self.hook(operation, key)

    def _now(self) -> datetime:
        return datetime(2026, 12, 1, tzinfo=UTC) + timedelta(milliseconds=next(self._ids))

    def _current(self, key: str) -> _Version | None:
        versions = self.objects.get(key)
        if not versions or versions[-1].data is None:
            return None
        return versions[-1]

    def _stored(self, key: str, version: _Version) -> StoredObject:
        assert version.data is not None
        return StoredObject(
            key,
            version.data,
            version.etag,
            version.version_id,
            version.last_modified,
            dict(version.metadata),
        )

    def get(self, key: str, version_id: str | None = None) -> StoredObject:
        self._call("get", key)
        with self._lock:
            if version_id is None:
                found = self._current(key)
            else:
                found = next(
                    (v for v in self.objects.get(key, []) if v.version_id == version_id), None
                )
            if found is None or found.data is None:
                raise ObjectMissingError(f"{key} ({version_id})")
            return self._stored(key, found)

    def get_if_exists(self, key: str) -> StoredObject | None:
        try:
            return self.get(key)
        except ObjectMissingError:
            return None

    def metadata(self, key: str, version_id: str | None = None) -> dict[str, str]:
        return self.get(key, version_id).metadata

    def exists(self, key: str) -> bool:
        self._call("head", key)
        return self._current(key) is not None

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
        self._call("put", key)
        with self._lock:
            current = self._current(key)
            if create_only and current is not None:
                raise PreconditionFailedError(key)
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailedError(key)
            version = _Version(f"v{next(self._ids)}", data, dict(metadata or {}), self._now())
            self.objects.setdefault(key, []).append(version)
            return WriteResult(key, version.etag, version.version_id)

    def versions(self, key: str) -> list[ObjectVersion]:
        return list(self.iter_versions(key))

    def iter_versions(self, key: str) -> Iterator[ObjectVersion]:
        self._call("list_versions", key)
        history = [v for v in self.objects.get(key, []) if v.data is not None]
        last = self.objects.get(key, [])[-1:]
        for version in reversed(history):
            yield ObjectVersion(
                key,
                version.version_id,
                version.etag,
                version.last_modified,
                bool(last) and last[0] is version,
                len(version.data or b""),
            )

    def delete_version(self, key: str, version_id: str) -> None:
        self._call("delete_version", key)
        with self._lock:
            self.objects[key] = [v for v in self.objects.get(key, []) if v.version_id != version_id]

    def delete(self, key: str) -> None:
        self._call("delete", key)
        with self._lock:
            marker = _Version(f"v{next(self._ids)}", None, {}, self._now())
            self.objects.setdefault(key, []).append(marker)

    def delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)

    def keys(self, prefix: str) -> Iterator[str]:
        self._call("list", prefix)
        return iter(sorted(k for k in self.objects if k.startswith(prefix) and self._current(k)))


@dataclass
class ListSink:
    """An event sink and a dead-letter queue in one: what was sent, in order."""

    events: list[EventDetail] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def publish(self, details: Sequence[EventDetail]) -> None:
        self.events.extend(details)

    def send(self, body: str) -> str:
        self.messages.append(body)
        return f"m{len(self.messages)}"
