"""The merge's one way to write an object whose content is fixed by its name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.storage import PreconditionFailedError

if TYPE_CHECKING:
    from shared.storage import ObjectStore


def create_once(
    store: ObjectStore,
    key: str,
    data: bytes,
    *,
    metadata: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> bool:
    """Create `key` unless it exists (`If-None-Match: *`); False when it did. What is there
    stands: a repeat writes no new version, and an operator's fix in place is kept."""
    try:
        store.put(key, data, create_only=True, metadata=metadata, content_type=content_type)
    except PreconditionFailedError:
        return False
    return True


def create_or_find(
    store: ObjectStore, key: str, data: bytes, content_type: str = "application/json"
) -> str | None:
    """The version of `key` holding `data`, written now unless it exists: a name fixed by its
    content keeps one version, so a twin's repeat cannot leave the version a manifest names
    noncurrent (the lifecycle expires noncurrent versions, shared/retention.py)."""
    try:
        return store.put(key, data, create_only=True, content_type=content_type).version_id
    except PreconditionFailedError:
        return store.get(key).version_id
