"""The history index: committed history by key, copied from the commit log every N entries.

Checkpoint `c` (`c` a multiple of `INDEX_EVERY`) is `_state/merge/<t>/index/<c>.json`: the
history rows of entries 1..c (and of history objects older than the log) grouped into
key-range **leaves**, immutable JSON-lines objects named by their range and a digest of their
bytes, plus the totals `status` shows. It is a pure function of the entries (and the pre-log
objects, which nothing writes any more), created once (`If-None-Match: *`) before the latest
that reflects entry `c`, so "latest reflects entry m" implies "checkpoint ⌊m/N⌋·N exists".
A reader takes that checkpoint and the entries after it (docs/merge_protocol.md, "The
history index"). This module is the format; `shared/history_lookup.py` reads it and
`services/merge/indexer.py` writes it.

A leaf line is `[<key>,"<history object>",<position>,<history row text>]`, lines sorted by
key, then by the object and the row's position in it: the order a full scan reads history in
(objects by name, rows in file order), kept so any reader sees exactly what a scan would.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from shared.commitlog import SEQ_DIGITS, LogEntry
from shared.layout import state_key
from shared.tables import TableSpec
from shared.types import INT64_MAX, INT64_MIN

# A checkpoint every this many entries: readers read at most this many entries beyond one.
INDEX_EVERY = 16
# A leaf holding more rows splits in two at its median key (a leaf of one key never splits).
LEAF_ROWS = 512


def index_prefix(table: str) -> str:
    return state_key("merge", table, "index") + "/"


def checkpoint_key(table: str, seq: int) -> str:
    return f"{index_prefix(table)}{seq:0{SEQ_DIGITS}d}.json"


def leaf_key(table: str, low: int, high: int, data: bytes) -> str:
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    return f"{index_prefix(table)}leaves/{low}_{high}_{digest}.jsonl"


def checkpoint_at(seq: int) -> int:
    """The checkpoint a reader of the state after entry `seq` starts from (0: none)."""
    return seq - seq % INDEX_EVERY


class LeafRef(BaseModel):
    """One key range of the index: its object (None: no row yet) and how many rows it holds."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    low: int
    high: int
    key: str | None = None
    rows: int = 0


class BucketRef(BaseModel):
    """The index by time of one bucket of keys: its directory (shared/history_frames.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    bucket: int
    key: str


class IndexCheckpoint(BaseModel):
    """Committed history through entry `seq`: its leaves (covering every key), its index by
    time (None: a checkpoint written before there was one) and totals."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    table: str
    seq: int
    history_objects: int
    history_rows: int
    leaves: list[LeafRef]
    frames: list[BucketRef] | None = None

    @classmethod
    def empty(cls, table: str) -> IndexCheckpoint:
        leaf = LeafRef(low=INT64_MIN, high=INT64_MAX)
        return cls(table=table, seq=0, history_objects=0, history_rows=0, leaves=[leaf], frames=[])

    def leaf_of(self, key: int) -> int:
        """The index in `leaves` of the leaf holding `key`."""
        return bisect_right([leaf.low for leaf in self.leaves], key) - 1


@dataclass(frozen=True, order=True)
class Line:
    """One history row in the index: its key, the history object holding it and its place
    there, and its text (as in the object)."""

    key: int
    origin: str
    position: int
    text: str

    def dump(self) -> str:
        return f"[{self.key},{json.dumps(self.origin)},{self.position},{self.text}]"


def parse_leaf(data: bytes) -> list[Line]:
    """A leaf's lines (history object names hold no comma, so the first three split off)."""
    lines = []
    for raw in data.decode("utf-8").splitlines():
        key, origin, position, text = raw.split(",", 3)
        lines.append(Line(int(key[1:]), _json_text(origin), int(position), text[:-1]))
    return lines


def _json_text(quoted: str) -> str:
    """A JSON string's value; without escapes, its text between the quotes (read per line)."""
    return quoted[1:-1] if "\\" not in quoted else str(json.loads(quoted))


def dump_leaf(lines: Iterable[Line]) -> bytes:
    return "".join(line.dump() + "\n" for line in lines).encode("utf-8")


def entry_lines(spec: TableSpec, entry: LogEntry) -> list[Line]:
    """The history rows an entry committed, as index lines (its object: `history_key`)."""
    if not entry.history_key:
        return []
    origin = entry.history_key
    return [
        Line(json.loads(text)[spec.primary_key], origin, position, text)
        for position, text in enumerate(entry.history)
    ]


def split_leaf(lines: list[Line], low: int, high: int) -> list[tuple[int, int, list[Line]]]:
    """Sorted lines of the range low..high as leaves of at most `LEAF_ROWS` lines, split at
    median keys (a pure function of the lines, so every writer makes the same leaves)."""
    if len(lines) <= LEAF_ROWS:
        return [(low, high, lines)]
    middle = lines[len(lines) // 2].key
    if middle == lines[0].key:  # the lower half is one key: split after it
        middle = next((line.key for line in lines if line.key > middle), middle)
    if middle == lines[0].key:  # a single key: a leaf of its own, however long
        return [(low, high, lines)]
    cut = next(i for i, line in enumerate(lines) if line.key >= middle)
    return [
        *split_leaf(lines[:cut], low, middle - 1),
        *split_leaf(lines[cut:], middle, high),
    ]
