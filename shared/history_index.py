"""The history index: committed history by key, copied from the commit log every N entries.

Checkpoint `c` (`c` a multiple of `INDEX_EVERY`) is `_state/merge/<t>/index/<c>.json`: the
history rows of entries 1..c (and of history objects older than the log) grouped into
key-range **leaves**, immutable JSON-lines objects named by their range and a digest of their
bytes, plus the totals `status` shows. A leaf (like a bucket of the index by time) is
rewritten only once a cycle of `FOLD_EVERY` checkpoints (`folds_at`); the rows it has not
folded yet are in the checkpoint's **deltas**, chunked by key range, after the entry it
holds rows `through` (docs/merge_protocol.md, L5). It is a pure function of the entries
(and the pre-log objects, which nothing writes any more), created once (`If-None-Match: *`)
before the latest that reflects entry `c`, so "latest reflects entry m" implies "checkpoint
⌊m/N⌋·N exists". A reader takes that checkpoint and the entries after it
(docs/merge_protocol.md, "The history index"). This module is the format;
`shared/history_lookup.py` reads it and `services/merge/indexer.py` (with
`services/merge/index_fold.py`) writes it.

A leaf line is `[<key>,"<history object>",<position>,<history row text>]`, lines sorted by
key, then by the object and the row's position in it: the order a full scan reads history in
(objects by name, rows in file order), kept so any reader sees exactly what a scan would.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Callable, Iterable
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
# Each leaf and bucket is rewritten (folded) once per this many checkpoints, at its place in
# the cycle; between folds its new rows are read from the checkpoints' deltas.
FOLD_EVERY = 16
# A delta's key range is cut into chunks of about this many rows (a key reads one per delta).
DELTA_ROWS = 1024


def index_prefix(table: str) -> str:
    return state_key("merge", table, "index") + "/"


def checkpoint_key(table: str, seq: int) -> str:
    return f"{index_prefix(table)}{seq:0{SEQ_DIGITS}d}.json"


def leaf_key(table: str, low: int, high: int, data: bytes) -> str:
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    return f"{index_prefix(table)}leaves/{low}_{high}_{digest}.jsonl"


def delta_key(table: str, first: int, last: int, chunk: int) -> str:
    return f"{index_prefix(table)}deltas/{first:0{SEQ_DIGITS}d}_{last:0{SEQ_DIGITS}d}/{chunk}.jsonl"


def folds_at(seq: int, place: int, count: int, through: int) -> bool:
    """Whether the unit at `place` of `count` (leaves or buckets in key order), folded through
    entry `through`, is folded at checkpoint `seq`: once the cycle reaches its place, if not
    folded since the cycle began. So each unit folds once a cycle, spread over the cycle in
    key order, and a unit reads at most the deltas of two cycles (one made in the cycle it was
    made in waits for the next)."""
    position = (seq // INDEX_EVERY) % FOLD_EVERY
    cycle_began = seq - position * INDEX_EVERY
    return place * FOLD_EVERY // count <= position and through < cycle_began


def checkpoint_at(seq: int) -> int:
    """The checkpoint a reader of the state after entry `seq` starts from (0: none)."""
    return seq - seq % INDEX_EVERY


class LeafRef(BaseModel):
    """One key range of the index: its object (None: no row yet), how many rows it holds,
    the entry it holds them through (None: the checkpoint's) and how many rows of later
    entries the checkpoint's deltas hold for it (`pending`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    low: int
    high: int
    key: str | None = None
    rows: int = 0
    through: int | None = None
    pending: int = 0


class BucketRef(BaseModel):
    """The index by time of one bucket of keys: its directory (shared/history_frames.py;
    None: not folded yet, every row in the deltas), folded through entry `through` (None:
    the checkpoint's), and how many rows of later entries the deltas hold for it."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    bucket: int
    key: str | None
    through: int | None = None
    pending: int = 0


class DeltaRef(BaseModel):
    """The history rows of entries `first..last` (a checkpoint's) that some leaf or bucket
    did not fold: keys from `low` in chunks of `width` keys, the chunks in `filled` written."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    first: int
    last: int
    low: int
    width: int
    filled: list[int]

    def chunks(self, low: int, high: int) -> list[int]:
        """The written chunks holding keys in low..high."""
        first, last = (low - self.low) // self.width, (high - self.low) // self.width
        return [chunk for chunk in self.filled if first <= chunk <= last]


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
    deltas: list[DeltaRef] = []

    @classmethod
    def empty(cls, table: str) -> IndexCheckpoint:
        leaf = LeafRef(low=INT64_MIN, high=INT64_MAX)
        return cls(table=table, seq=0, history_objects=0, history_rows=0, leaves=[leaf], frames=[])

    def leaf_of(self, key: int) -> int:
        """The index in `leaves` of the leaf holding `key`."""
        return self.leaf_finder()(key)

    def leaf_finder(self) -> Callable[[int], int]:
        """`leaf_of`, for many keys (the leaves' bounds listed once)."""
        lows = [leaf.low for leaf in self.leaves]
        return lambda key: bisect_right(lows, key) - 1

    def dump(self) -> bytes:
        """The checkpoint object (fields at their defaults left out: a unit with nothing
        pending records no `through`)."""
        return self.model_dump_json(indent=1, exclude_defaults=True).encode()

    def through(self, ref: LeafRef | BucketRef) -> int:
        """The entry a leaf's or bucket's object holds its rows through."""
        return self.seq if ref.through is None else ref.through


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


def split_delta(lines: list[Line]) -> tuple[int, int, dict[int, list[Line]]]:
    """Sorted lines cut into chunks of about `DELTA_ROWS` lines by key range: the lowest
    key, the chunks' width in keys and the lines of each chunk."""
    low, high = lines[0].key, lines[-1].key
    width = max(1, -(-(high - low + 1) * DELTA_ROWS // len(lines)))
    chunks: dict[int, list[Line]] = {}
    for line in lines:
        chunks.setdefault((line.key - low) // width, []).append(line)
    return low, width, chunks
