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

`aws_like_moto()` applies the patches for a `with` block and then restores moto; `install()`
applies them for the rest of the process (the local runtime's). Both nest and repeat freely.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from typing import Any

from moto.s3 import notifications
from moto.s3.responses import S3Response

SEQUENCER_DIGITS = 18  # S3's are hex strings; fixed width, so later ones compare greater

_original_send_event = notifications.send_event
_original_get_s3_event = notifications._get_s3_event
_original_put_object = S3Response.put_object

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


def _patch(on: bool) -> None:
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
