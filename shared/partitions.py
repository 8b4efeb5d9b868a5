"""Key-range partitions of latest: which partition a key belongs to, and the manifest.

A table with `rows_per_partition = R` keeps latest as immutable objects
`latest/<t>/<low>-<high>_<batch>_<digest>.json.gz`, each the canonical rows file of the keys
`low..high` (`low = (key // R) * R`, `high = low + R - 1`), gzip-compressed, plus
`latest/<t>/_manifest.json`
listing the current ones. The manifest is a copy of the commit log entry that made it
(shared/commitlog.py); partitions it no longer lists are removed from view after it is written
and kept as noncurrent versions for a while (readers of an older manifest read by versionId).
"""

from __future__ import annotations

import gzip

from pydantic import BaseModel, ConfigDict


class PartitionRef(BaseModel):
    """One current partition: its key range, object key (and version) and row count."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    low: int
    high: int
    key: str
    version_id: str | None = None
    rows: int


class PartitionManifest(BaseModel):
    """`latest/<t>/_manifest.json`: the table's current partitions, sorted by key range."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    table: str
    batch: str
    # the commit log entry this manifest is a copy of: also makes its bytes (its ETag) unique
    seq: int = 0
    rows_per_partition: int
    partitions: list[PartitionRef]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    def by_low(self) -> dict[int, PartitionRef]:
        return {p.low: p for p in self.partitions}


def partition_low(key: int, rows_per_partition: int) -> int:
    """The first key of the range `key` falls in (fixed-width ranges: ids are dense)."""
    return (key // rows_per_partition) * rows_per_partition


# Partitions are stored gzip-compressed (JSON compresses about 8:1, so a merge moves an
# eighth of the bytes; level 1 compresses fastest). `mtime=0` keeps the bytes a function of
# the rows alone: the same partition written twice is the same object (its name holds their
# digest). Any reader reads both forms: a partition written before compression is plain JSON.
PARTITION_LEVEL = 1
_GZIP_MAGIC = b"\x1f\x8b"


def pack_partition(data: bytes) -> bytes:
    """A partition's rows file as stored."""
    return gzip.compress(data, compresslevel=PARTITION_LEVEL, mtime=0)


def unpack_partition(data: bytes) -> bytes:
    """A stored partition's rows file (compressed or, written before, plain)."""
    return gzip.decompress(data) if data[:2] == _GZIP_MAGIC else data
