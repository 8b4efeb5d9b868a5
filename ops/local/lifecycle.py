"""The lifecycle player: the bucket's noncurrent-version rules, played as S3 plays them.

On AWS the stack's lifecycle rules (`infra/ingest_bucket.py`) expire noncurrent versions;
moto applies no lifecycle rule, so without this a local run keeps every version it ever wrote,
in the server's memory. The player reads the same rules (`shared/retention.py`) and, on a
schedule, deletes each version that has been noncurrent for its rule's days, and each delete
marker left with no version behind it. Time may be compressed: `day_seconds` is how long one
lifecycle day lasts here, never shorter than the longest read the rules protect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby, pairwise
from typing import TYPE_CHECKING, Any

from shared.retention import DAY_SECONDS, LONGEST_READ_SECONDS, NONCURRENT_RULES, NoncurrentRule

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# S3 deletes at most this many versions per DeleteObjects call.
DELETE_BATCH = 1000


@dataclass(frozen=True)
class LifecycleRun:
    """One pass of the player over the bucket: what it expired."""

    versions: int
    delete_markers: int
    bytes: int


@dataclass(frozen=True)
class _Entry:
    """A version or a delete marker of one key, as the version listing gives it."""

    key: str
    version_id: str
    last_modified: datetime
    size: int
    is_marker: bool
    is_latest: bool


class LifecyclePlayer:
    """Plays `rules` on one bucket; `clock` is the time the rules are played at."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        *,
        day_seconds: float = DAY_SECONDS,
        rules: tuple[NoncurrentRule, ...] = NONCURRENT_RULES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if min(rule.days for rule in rules) * day_seconds < LONGEST_READ_SECONDS:
            raise ValueError(
                f"a lifecycle day of {day_seconds}s would expire versions a reader of an older "
                f"manifest may still read (up to {LONGEST_READ_SECONDS}s)"
            )
        self.s3 = s3
        self.bucket = bucket
        self.day_seconds = day_seconds
        self.rules = rules
        self.clock = clock

    def run_once(self) -> LifecycleRun:
        now = self.clock()
        expired: list[_Entry] = []
        for rule in self.rules:
            age = timedelta(seconds=rule.days * self.day_seconds)
            for entries in self._keys(rule.prefix):
                expired += expired_entries(entries, now - age)
        self._delete(expired)
        versions = [e for e in expired if not e.is_marker]
        return LifecycleRun(
            versions=len(versions),
            delete_markers=len(expired) - len(versions),
            bytes=sum(e.size for e in versions),
        )

    def _keys(self, prefix: str) -> Iterator[list[_Entry]]:
        """Each key's versions and delete markers, newest (the current one) first."""
        pages = self.s3.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        entries = [entry for page in pages for entry in _page_entries(page)]
        entries.sort(key=lambda e: e.key)
        for _, group in groupby(entries, key=lambda e: e.key):
            # the listing gives a key's versions newest first; the sort is stable for ties
            yield sorted(group, key=lambda e: (e.is_latest, e.last_modified), reverse=True)

    def _delete(self, entries: list[_Entry]) -> None:
        for start in range(0, len(entries), DELETE_BATCH):
            batch = entries[start : start + DELETE_BATCH]
            self.s3.delete_objects(
                Bucket=self.bucket,
                Delete={
                    "Objects": [{"Key": e.key, "VersionId": e.version_id} for e in batch],
                    "Quiet": True,
                },
            )


def expired_entries(entries: list[_Entry], noncurrent_before: datetime) -> list[_Entry]:
    """S3's two actions on one key (entries newest first): a noncurrent version expires once
    its successor (the entry just newer) is older than `noncurrent_before`; then a delete
    marker that is all that is left expires too (ExpiredObjectDeleteMarker)."""
    expired = [
        older for newer, older in pairwise(entries) if newer.last_modified <= noncurrent_before
    ]
    left = [e for e in entries if e not in expired]
    if len(left) == 1 and left[0].is_marker:
        expired.append(left[0])
    return expired


def _page_entries(page: Any) -> Iterator[_Entry]:
    for version in page.get("Versions", []):
        yield _Entry(
            key=version["Key"],
            version_id=version["VersionId"],
            last_modified=version["LastModified"],
            size=version["Size"],
            is_marker=False,
            is_latest=version["IsLatest"],
        )
    for marker in page.get("DeleteMarkers", []):
        yield _Entry(
            key=marker["Key"],
            version_id=marker["VersionId"],
            last_modified=marker["LastModified"],
            size=0,
            is_marker=True,
            is_latest=marker["IsLatest"],
        )
