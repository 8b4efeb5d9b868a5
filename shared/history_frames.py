"""The history index by time: what `asof T` reads instead of every history row.

Keys fall in **buckets** of `FRAME_KEYS` consecutive keys. A checkpoint names, per bucket
with history, a **directory** (`index/frames/<b>_<digest>.json`): its **frames**, windows of
time [since, next since) (the first from the beginning), and per key the *tail*, the history
row ordered last for it. A frame (`index/frames/<b>_<digest>.jsonl`, leaf format) holds, for
each key of the bucket, one contiguous stretch of the key's versions in timeline order
(shared/timeline.py: by observation, equal rows after each other counted once): from its
**anchor**, the last counted version that started at or before `since` (none: from its first
version), to its last version that started before the next frame's `since` (the last frame:
to its last version). So a frame holds about one row per key plus what changed in its window,
and the answer at any time T in the window depends, per key, only on the stretch, the entries
after the checkpoint and latest's row: the counted version live at T is the last one started
at or before T, and nothing ordered before the anchor or after the stretch (all started after
the window) changes which one that is. `needs_every_version` says when that does not hold
(a row ordered before the anchor, or one started by T while the stretch does not reach the
key's tail): the reader then reads that key's leaf. docs/merge_protocol.md, "The history
index", has the argument; `update_bucket` is the checkpoint's write.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from shared import timeline
from shared.history_index import Line, dump_leaf, entry_lines, index_prefix, parse_leaf
from shared.history_lookup import HistoryView
from shared.rows import decode_rows, dump_lines
from shared.timeline import Seen, naive_utc

# Keys per bucket: a frame holds about one row per key of its bucket.
FRAME_KEYS = 1024
# A frame closes once it holds this many rows (at least) beyond one per key (or a quarter as
# many more again as its keys, if more: what `asof` reads past one row per key).
FRAME_GROWTH = 64

Ordered = list[tuple[Line, Seen]]


class FrameRef(BaseModel):
    """One frame: from `since` (None: the beginning) to the next frame's `since`."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    since: datetime | None
    key: str | None  # None: no row (a bucket's first frame before anything was written)


class Directory(BaseModel):
    """A bucket's frames, oldest first, and per key its tail ([key, object, position])."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    frames: list[FrameRef]
    tails: list[tuple[int, str, int]]

    def frame_at(self, at: datetime) -> FrameRef:
        return [f for f in self.frames if f.since is None or f.since <= at][-1]


def bucket_of(key: int) -> int:
    return key // FRAME_KEYS


def bucket_range(bucket: int) -> tuple[int, int]:
    """The first and last key of a bucket."""
    return bucket * FRAME_KEYS, (bucket + 1) * FRAME_KEYS - 1


def frames_key(table: str, bucket: int, data: bytes, suffix: str) -> str:
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    return f"{index_prefix(table)}frames/{bucket}_{digest}.{suffix}"


def seen_rows(lines: Sequence[Line]) -> list[Seen]:
    """The lines as the timeline sees them (rows decoded as the readers decode them)."""
    rows = decode_rows(dump_lines([line.text for line in lines]), "history index")
    return [Seen.of(dict(row)) for row in rows]


def ordered(lines: Iterable[Line]) -> Ordered:
    """One key's lines in timeline order: full-scan order, then stably by observation."""
    scan = sorted(lines, key=lambda line: (line.origin, line.position))
    return sorted(zip(scan, seen_rows(scan), strict=True), key=lambda pair: pair[1].order())


def counted(versions: Ordered) -> list[bool]:
    """Which versions the timeline counts (shared.timeline.counted)."""
    return timeline.counted([seen for _, seen in versions])


def stretch(
    versions: Ordered, flags: list[bool], since: datetime | None, until: datetime | None
) -> list[Line]:
    """A key's versions from its anchor at `since` to its last started before `until`."""
    return [line for line, _ in stretch_pairs(versions, flags, since, until)]


def stretch_pairs(
    versions: Ordered, flags: list[bool], since: datetime | None, until: datetime | None
) -> Ordered:
    """`stretch`, each line with how the timeline sees it."""
    starts = [seen.start for _, seen in versions]
    first = 0
    if since is not None:
        anchors = [i for i, start in enumerate(starts) if flags[i] and start <= since]
        first = anchors[-1] if anchors else 0
    ends = [i for i, start in enumerate(starts) if until is None or start < until]
    last = ends[-1] if ends else -1
    return versions[first : last + 1]


def _bounds(since: datetime | None, keys: int, starts: list[datetime]) -> list[datetime]:
    """Where new frames begin: each once the one before holds its keys and its growth."""
    budget = keys + max(FRAME_GROWTH, keys // 4)
    bounds: list[datetime] = []
    current, count = since, keys
    for start in sorted(s for s in starts if since is None or s > since):
        if count >= budget and (current is None or start > current):
            bounds.append(start)
            current, count = start, keys
        count += 1
    return bounds


def split_window(
    since: datetime | None, versions: Mapping[int, Ordered]
) -> list[tuple[datetime | None, list[Line]]]:
    """The last frame's stretches (each from its anchor at `since` to the key's tail, in
    timeline order) as one frame or, past its budget, several from `since` on."""
    starts = [seen.start for pairs in versions.values() for _, seen in pairs]
    windows: list[datetime | None] = [since, *_bounds(since, len(versions), starts)]
    frames = []
    for begin, end in itertools.zip_longest(windows, windows[1:]):
        lines = [
            line
            for key in sorted(versions)
            for line in stretch(versions[key], counted(versions[key]), begin, end)
        ]
        frames.append((begin, sorted(lines)))
    return frames


def by_key(lines: Iterable[Line]) -> dict[int, list[Line]]:
    found: dict[int, list[Line]] = defaultdict(list)
    for line in lines:
        found[line.key].append(line)
    return found


def _first_affected(frames: list[FrameRef], versions: Mapping[int, Ordered], new: set[Line]) -> int:
    """The first frame the new lines can change: the one whose window holds their earliest
    start if each key's new lines are ordered after its old ones (the usual case); else the
    first (a late row can move any anchor)."""
    for pairs in versions.values():
        tail = {line for line, _ in pairs[len(pairs) - sum(1 for p in pairs if p[0] in new) :]}
        if not tail <= new:
            return 0
    earliest = min(seen.start for pairs in versions.values() for line, seen in pairs if line in new)
    nexts = [f.since for f in frames[1:]]
    return next(i for i, until in enumerate([*nexts, None]) if until is None or until > earliest)


class FrameWriter:
    """Rewrites one bucket's frames for a checkpoint: `read` gets an object's bytes, `write`
    creates one (create-only)."""

    def __init__(
        self,
        table: str,
        bucket: int,
        read: Callable[[str], bytes],
        write: Callable[[str, bytes], None],
    ) -> None:
        self.table, self.bucket, self.read, self.write = table, bucket, read, write

    def _lines(self, ref: FrameRef) -> list[Line]:
        return parse_leaf(self.read(ref.key)) if ref.key else []

    def _put(self, since: datetime | None, lines: list[Line]) -> FrameRef:
        if not lines:
            return FrameRef(since=since, key=None)
        data = dump_leaf(lines)
        key = frames_key(self.table, self.bucket, data, "jsonl")
        self.write(key, data)
        return FrameRef(since=since, key=key)

    def update(
        self, before: Directory | None, full: Mapping[int, list[Line]], new: set[Line]
    ) -> Directory:
        """`before` with the keys of `full` (each key's every line) replaced."""
        versions = {key: ordered(lines) for key, lines in full.items()}
        flags = {key: counted(pairs) for key, pairs in versions.items()}
        frames = before.frames if before else [FrameRef(since=None, key=None)]
        first = _first_affected(frames, versions, new)
        refs = list(frames[:first])
        for ref, after in zip(frames[first:-1], frames[first + 1 :], strict=False):
            kept = [line for line in self._lines(ref) if line.key not in full]
            fresh = [
                ln for k in full for ln in stretch(versions[k], flags[k], ref.since, after.since)
            ]
            refs.append(self._put(ref.since, sorted(kept + fresh)))
        last = frames[-1]
        slices = {k: ordered(v) for k, v in by_key(self._lines(last)).items() if k not in full}
        for key in full:  # a contiguous part of the key's versions: still in timeline order
            slices[key] = stretch_pairs(versions[key], flags[key], last.since, None)
        refs += [self._put(since, lines) for since, lines in split_window(last.since, slices)]
        tails = (
            {key: (key, origin, position) for key, origin, position in before.tails}
            if before
            else {}
        )
        tails.update((k, (k, p[-1][0].origin, p[-1][0].position)) for k, p in versions.items())
        return Directory(frames=refs, tails=[tails[key] for key in sorted(tails)])

    def commit(self, directory: Directory) -> str:
        data = directory.model_dump_json().encode()
        key = frames_key(self.table, self.bucket, data, "json")
        self.write(key, data)
        return key


def needs_every_version(
    stretch_lines: list[Line],
    tail: tuple[str, int] | None,
    extra: list[Line],
    latest_start: datetime | None,
    at: datetime,
) -> bool:
    """Whether a key's answer at `at` needs more than its frame's stretch, its rows in the
    entries after the checkpoint (`extra`) and latest's row (which started at `latest_start`;
    None: no row): a row of those ordered at or before the stretch's first, or started by `at`
    while the key has versions past the stretch (its tail is not in it)."""
    if not stretch_lines and tail is None:
        return False  # no history in the checkpoint: the entries and latest are all of it
    extra_seen = seen_rows(extra) if extra else []
    if extra_seen and stretch_lines:
        first = ordered(stretch_lines)[0][1].order()
        if any(seen.order() <= first for seen in extra_seen):
            return True
    if tail is None or tail in {(line.origin, line.position) for line in stretch_lines}:
        return False
    starts = [seen.start for seen in extra_seen] + (
        [latest_start] if latest_start is not None else []
    )
    return any(start <= naive_utc(at) for start in starts)


def history_at(
    view: HistoryView, at: datetime, latest_starts: Mapping[int, datetime]
) -> list[str] | None:
    """The history row texts `asof at` needs, in full-scan order: per key its frame's
    stretch and its rows of the entries after the checkpoint, or (`needs_every_version`) all
    its rows. `latest_starts`: when each key's latest row started. None: the view has no
    index by time (read every row)."""
    checkpoint = view.checkpoint
    if checkpoint.frames is None or view.base:
        return None
    after = [line for entry in view.entries for line in entry_lines(view.spec, entry)]
    extra = by_key(after)
    for ref in checkpoint.frames:  # rows a bucket's directory does not hold yet
        for line in view.deltas.of(checkpoint, ref, *bucket_range(ref.bucket)):
            extra.setdefault(line.key, []).append(line)
    chosen: list[Line] = []
    every: set[int] = set()
    for ref in checkpoint.frames:
        if ref.key is None:
            continue
        directory = Directory.model_validate_json(view.store.get(ref.key).data)
        frame = directory.frame_at(naive_utc(at))
        slices = by_key(parse_leaf(view.store.get(frame.key).data) if frame.key else [])
        tails = {key: (origin, position) for key, origin, position in directory.tails}
        for key in slices.keys() | tails.keys():
            found = slices.get(key, [])
            if needs_every_version(
                found, tails.get(key), extra.get(key, []), latest_starts.get(key), at
            ):
                every.add(key)
            else:
                chosen += found
    chosen += [line for key, lines in extra.items() if key not in every for line in lines]
    chosen += view.lines(every) if every else []
    return [line.text for line in sorted(chosen, key=lambda line: (line.origin, line.position))]
