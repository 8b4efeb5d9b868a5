"""moto, made to do what AWS does where the project depends on it: the local runtime and tests.

Production code has one path, AWS's, so moto is adapted here, at its edge, never in services/.
Both `mock_aws` and moto's server (ThreadedMotoServer) run moto in this process, so patching
its classes in-process covers both.

- S3 event notifications (`moto.s3.notifications.send_event` / `_get_s3_event`): for a
  versioned bucket AWS's always carry `s3.object.versionId` and `s3.object.sequencer` (hex,
  greater for every later event on a key; one event's notifications share it); moto's carry
  neither. They are added here. moto's `eventTime` already has milliseconds.
- Conditional PutObject (`moto.s3.responses.S3Response.put_object`): S3 decides If-Match /
  If-None-Match atomically; moto checks, then writes, with other work between, so two threads
  can both pass the check. PutObject is serialised here (which also keeps the sequencers of
  concurrent puts in the order their versions were written).
- ListObjectVersions (`moto.s3.models.S3Backend.list_object_versions`): moto deep-copies
  every version of every key of the bucket, bytes included, on each call (only to mark
  `is_latest` on the copies), whatever the prefix: a listing of a bucket holding 1 GB
  allocated 1 GB. The allocator keeps much of that churn, so the server's memory grew many
  times faster than the bucket (docs/decisions.md, 2026-12-03). Here the listing gets views of
  the versions instead (the version's attributes, its own `is_latest`): no bytes copied.

`aws_like_moto()` applies the patches for a `with` block and then restores moto; `install()`
applies them for the rest of the process (the local runtime's). Both nest and repeat freely.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
from collections.abc import Iterator
from typing import Any

from moto.s3 import models as s3_models
from moto.s3 import notifications
from moto.s3.responses import S3Response

SEQUENCER_DIGITS = 18  # S3's are hex strings; fixed width, so later ones compare greater

_original_send_event = notifications.send_event
_original_get_s3_event = notifications._get_s3_event
_original_put_object = S3Response.put_object
_original_models_copy = s3_models.copy  # type: ignore[attr-defined]

_sequence = itertools.count(1)
_current = threading.local()  # the sequencer of the event being sent on this thread
_put_lock = threading.Lock()
_state_lock = threading.Lock()
_users = 0  # open aws_like_moto() blocks, plus one once install()ed
_installed = False


def _send_event(account_id: str, event_name: Any, bucket: Any, key: Any) -> None:
    _current.sequencer = f"{next(_sequence):0{SEQUENCER_DIGITS}X}"
    try:
        _original_send_event(account_id, event_name, bucket, key)
    finally:
        del _current.sequencer


def _get_s3_event(
    event_name: str, bucket: Any, key: Any, notification_id: str
) -> dict[str, list[dict[str, Any]]]:
    event = _original_get_s3_event(event_name, bucket, key, notification_id)
    sequencer = getattr(_current, "sequencer", None) or f"{next(_sequence):0{SEQUENCER_DIGITS}X}"
    version_id = getattr(key, "version_id", None)
    for record in event["Records"]:
        obj = record["s3"]["object"]
        if version_id not in (None, "null"):  # "null": moto's version of an unversioned key
            obj["versionId"] = version_id
        obj["sequencer"] = sequencer
    return event


def _put_object(self: S3Response) -> Any:
    with _put_lock:
        return _original_put_object(self)


class _ListedVersion:
    """A version (FakeKey or FakeDeleteMarker) as moto's version listing sees it: the version
    itself, read through, with the listing's own `is_latest`."""

    def __init__(self, version: Any) -> None:
        object.__setattr__(self, "_version", version)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # the listing sorts versions from markers by isinstance
        return type(object.__getattribute__(self, "_version"))

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_version"), name)


class _ListingCopy:
    """`moto.s3.models.copy`: its one `deepcopy` is the version listing's, of one key's list
    of versions; `copy` is its value getter's, unchanged."""

    copy = staticmethod(copy.copy)

    @staticmethod
    def deepcopy(versions: list[Any]) -> list[Any]:
        return [_ListedVersion(version) for version in versions]


def _patch(on: bool) -> None:
    s3_models.copy = _ListingCopy if on else _original_models_copy  # type: ignore[attr-defined,assignment]
    notifications.send_event = _send_event if on else _original_send_event
    notifications._get_s3_event = _get_s3_event if on else _original_get_s3_event
    S3Response.put_object = _put_object if on else _original_put_object  # type: ignore[method-assign]


def _acquire() -> None:
    global _users
    if _users == 0:
        _patch(True)
    _users += 1


def _release() -> None:
    global _users
    _users -= 1
    if _users == 0:
        _patch(False)


def install() -> None:
    """Patch moto for the rest of this process (idempotent)."""
    global _installed
    with _state_lock:
        if not _installed:
            _installed = True
            _acquire()


def is_applied() -> bool:
    return notifications._get_s3_event is _get_s3_event


@contextlib.contextmanager
def aws_like_moto() -> Iterator[None]:
    """moto patched for the block; restored after it (unless still in use or installed)."""
    with _state_lock:
        _acquire()
    try:
        yield
    finally:
        with _state_lock:
            _release()
