"""The merge rules as pure functions: versions in, decisions out. No boto3, no events.

docs/merge_protocol.md, "Version order" and "The rules". Per key, the batch's versions are
**steps** in observation order: a log row (or a delete) is a step of its own, observed at its
commit position; a file's polled rows of the key are one step, observed with the file,
ordered inside by `last_updated`, then file order (its last is the step's version). latest's
row (or tombstone) sits in that order at its own observation. The steps observed before it
only add history; the steps after it are applied in order, each superseding the version
before it:

- a version supersedes the one before it, which goes to history; latest's row always does
  (it is in latest, so not in history); a log row observed after latest's is new by its
  position, so it always does too; any other version only unless history or latest already
  holds that content (a cumulative upload, an overlapping re-read, a replay: which is also why
  the same batch applied twice changes nothing);
- the same content again is no new version: the version takes the later observation (a file
  observed in between must not beat it);
- a delete sends the version before it to history marked deleted (`deleted_at`); when no
  version is before it, its old row (REPLICA IDENTITY FULL), if given, goes there unless held;
- the last step decides latest: its version, or (a delete) a tombstone of the key.

An update leaving out unchanged TOAST values is filled from the version before it: the
step before, latest's row, or (observed before latest's) committed history's version just
before it; with none, it is a problem and the batch is quarantined.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import pairwise

from services.merge.staged import Staged, toast_problem
from shared.changes import Change, Operation
from shared.history import HistoryRow
from shared.observation import Observation
from shared.rows import RowProblem, row_json
from shared.schemas import RowModel
from shared.tables import TableSpec
from shared.versions import Tombstone, Version

# latest's state of a key: its row, or the tombstone of its delete
Held = Version | Tombstone
Step = list[Staged]


@dataclass
class Known:
    """What committed history holds for some keys: row texts (content identity) and each
    key's versions with their observations (where a late TOAST row is filled from)."""

    texts: set[str] = field(default_factory=set)
    versions: dict[int, list[Version]] = field(default_factory=dict)


@dataclass
class MergeResult:
    written: dict[int, Version] = field(default_factory=dict)  # into latest, by key
    removed: dict[int, Tombstone] = field(default_factory=dict)  # deleted from latest
    history: list[HistoryRow] = field(default_factory=list)
    inserted: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)  # rows that cannot be merged

    @property
    def changes_anything(self) -> bool:
        return bool(self.written or self.removed or self.history)

    @property
    def keys_written(self) -> list[int]:
        return sorted(self.written)

    @property
    def keys_deleted(self) -> list[int]:
        return sorted(self.deleted)

    def extend(self, other: MergeResult) -> None:
        """Put together the results of disjoint keys (partitions of one batch)."""
        self.written.update(other.written)
        self.removed.update(other.removed)
        self.history.extend(other.history)
        for mine, theirs in (
            (self.inserted, other.inserted),
            (self.updated, other.updated),
            (self.unchanged, other.unchanged),
            (self.late, other.late),
            (self.deleted, other.deleted),
        ):
            mine.extend(theirs)
        self.problems.extend(other.problems)


def primary_key(spec: TableSpec, row: RowModel) -> int:
    key: int = getattr(row, spec.primary_key)
    return key


def as_staged(
    spec: TableSpec, rows: Iterable[RowModel | Staged], observed: Observation | None
) -> list[Staged]:
    """Rows given as models are polled rows observed at `observed`."""
    out = []
    for index, row in enumerate(rows):
        if isinstance(row, Staged):
            out.append(row)
        else:
            assert observed is not None  # a polled row needs its file's observation
            out.append(Staged.polled(spec, row, observed, index))
    return out


def steps_by_key(spec: TableSpec, items: Iterable[Staged]) -> dict[int, list[Step]]:
    """Each key's steps in observation order (a polled step's rows oldest first)."""
    grouped: dict[int, list[Staged]] = {}
    for item in items:
        grouped.setdefault(item.key, []).append(item)
    return {key: _steps(spec, found) for key, found in grouped.items()}


def _steps(spec: TableSpec, items: list[Staged]) -> list[Step]:
    steps: list[Step] = [[item] for item in items if item.change is not None]
    polled = _distinct_polled(spec, [item for item in items if item.change is None])
    if polled:
        steps.append(polled)
    # the changes of one transaction share their observation (the commit's): file order; a
    # polled delete (an inferred one) comes after its file's rows of the key
    return sorted(
        steps, key=lambda s: (s[0].observed, s[0].deleted and not s[0].logged, s[0].index)
    )


def _distinct_polled(spec: TableSpec, items: list[Staged]) -> list[Staged]:
    """Distinct polled versions, oldest first; equal `last_updated` keeps file order."""
    versions: dict[str, Staged] = {}
    for item in items:
        assert item.row is not None  # a polled row is whole
        text = row_json(spec, item.row)
        versions.pop(text, None)  # a repeated version counts where it last appears
        versions[text] = item
    return sorted(versions.values(), key=lambda i: i.time)


def _earlier(step: Step, current: Held | None) -> bool:
    """Observed at or before latest's version of the key (changes nothing in latest)."""
    return (
        current is not None
        and current.observed is not None
        and step[0].observed <= current.observed
    )


def keys_needing_history(
    spec: TableSpec,
    held: Mapping[int, Held],
    staged: Sequence[RowModel | Staged],
    observed: Observation | None = None,
) -> set[int]:
    """Keys whose staged versions may already be in history: a file's polled versions that
    it only passes through, a delete's old row, and every version observed before latest's
    (a delayed delivery, a redelivery, a replay). Only these need history read back; a log
    row observed after latest's is new by its position and needs none."""
    return {
        key
        for key, steps in steps_by_key(spec, as_staged(spec, staged, observed)).items()
        if any(_needs_history(step, held.get(key), last=step is steps[-1]) for step in steps)
    }


def _needs_history(step: Step, current: Held | None, *, last: bool) -> bool:
    first = step[0]
    return (
        len(step) > 1
        or _earlier(step, current)
        or (first.deleted and first.row is not None)
        or (first.change is None and not last)
    )


def merge(
    spec: TableSpec,
    held: Mapping[int, Held],
    staged: Sequence[RowModel | Staged],
    observed: Observation | None,
    batch: str,
    known: Known | Collection[str] = (),
    source: str = "",
) -> MergeResult:
    """Merge one batch into the rows (and tombstones) latest holds for its keys.

    Rows given as models are polled rows observed at `observed`. `known` holds the history of
    (at least) the keys `keys_needing_history` names; a version found there is not written
    to history again.
    """
    if not isinstance(known, Known):
        known = Known(set(known))
    result = MergeResult()
    for key, steps in steps_by_key(spec, as_staged(spec, staged, observed)).items():
        _KeyMerge(spec, key, batch, known, result, source).run(held.get(key), steps)
    result.history.sort(key=lambda h: (primary_key(spec, h.row), h.row.last_updated))
    return result


@dataclass(frozen=True)
class _Link:
    """The version a step supersedes: latest's row, or one the batch staged."""

    row: RowModel
    observed: Observation | None
    change: Change | None
    in_latest: bool = False  # latest's row: always to history when superseded
    fresh: bool = False  # a log row observed after latest's: new by its position


def _time_of(current: Held) -> datetime:
    if isinstance(current, Tombstone):
        return current.deleted_at
    if current.change is not None:
        return current.change.commit_ts
    return current.row.last_updated


class _KeyMerge:
    """The rules for one key: walk its steps, before latest's version and after it."""

    def __init__(
        self,
        spec: TableSpec,
        key: int,
        batch: str,
        known: Known,
        result: MergeResult,
        source: str,
    ) -> None:
        self.spec = spec
        self.key = key
        self.batch = batch
        self.known = known
        self.result = result
        self.source = source
        self.current: Held | None = None
        self.taken: set[str] = set()  # texts this key has in latest or sends to history
        self.prev: _Link | None = None  # the version the next step supersedes
        self.tomb: Staged | None = None  # the delete latest ends with
        self.wrote = False
        self.deletions = 0  # deletes of a live version
        self.marked = False  # a later step sent a row to history marked deleted

    def run(self, current: Held | None, steps: list[Step]) -> None:
        self.current = current
        before = [step for step in steps if _earlier(step, current)]
        after = steps[len(before) :]
        if isinstance(current, Version):
            self.taken.add(row_json(self.spec, current.row))
        for step in before:
            self._step(step, later=False)
        if before:
            self._meet_current()
        elif isinstance(current, Version):
            self.prev = _Link(current.row, current.observed, current.change, in_latest=True)
        for step in after:
            self._step(step, later=True)
        self._outcome(bool(after))

    # ---- one step ---------------------------------------------------------------------

    def _step(self, step: Step, *, later: bool) -> None:
        first = step[0]
        if first.deleted:
            self._delete(first, later=later)
            return
        rows = [(item, self._resolve(item, later=later)) for item in step]
        whole = [(item, row) for item, row in rows if row is not None]
        if len(whole) == len(rows):
            self._advance(whole, later=later)

    def _advance(self, rows: list[tuple[Staged, RowModel]], *, later: bool) -> None:
        live_before = self.prev is not None
        item, newest = rows[-1]
        if self.prev is not None and self._text(self.prev.row) == self._text(newest):
            if later:  # seen again: the version takes the later observation
                self.prev = replace(self.prev, observed=item.observed)
        else:
            if self.prev is not None:
                self._supersede(self.prev, item.time)
            op = Operation.UPDATE if live_before or len(rows) > 1 else self._first_op()
            change = item.change or Change(op, newest.last_updated)
            self.prev = _Link(newest, item.observed, change, fresh=later and item.logged)
        # a polled step's older versions (a file may repeat versions, as a cumulative upload
        # does): to history unless held
        for number, ((older, row), (successor, _)) in enumerate(pairwise(rows)):
            op = Operation.UPDATE if live_before or number else self._first_op()
            change = older.change or Change(op, row.last_updated)
            self._supersede(_Link(row, older.observed, change), successor.time)

    def _first_op(self) -> Operation:
        """A polled version with none before it: an insert, unless latest holds the key."""
        return Operation.UPDATE if isinstance(self.current, Version) else Operation.INSERT

    def _delete(self, item: Staged, *, later: bool) -> None:
        ended = self.prev
        if ended is not None:
            self.deletions += int(later)
        elif item.row is not None:  # the old row, the only sign of the version it ended
            ended = _Link(item.row, item.observed, None)
        if ended is not None and self._supersede(ended, item.time, deleted_at=item.time):
            self.marked = self.marked or later
        self.prev = None
        if later:
            self.tomb = item

    def _meet_current(self) -> None:
        """The last earlier version is superseded by latest's (which the later steps meet)."""
        current = self.current
        assert current is not None  # there are earlier steps only when latest has the key
        if self.prev is not None:
            self._supersede(self.prev, _time_of(current))
        self.prev = None
        if isinstance(current, Version):
            self.prev = _Link(current.row, current.observed, current.change, in_latest=True)

    def _supersede(self, link: _Link, at: datetime, deleted_at: datetime | None = None) -> bool:
        """Send the version to history unless it is held there (or in latest); True: sent."""
        text = self._text(link.row)
        if not (link.in_latest or link.fresh) and (text in self.taken or text in self.known.texts):
            return False
        self.taken.add(text)
        self.wrote = True
        self.result.history.append(
            HistoryRow(link.row, at, self.batch, link.observed, link.change, deleted_at)
        )
        return True

    # ---- unchanged TOAST values -------------------------------------------------------

    def _resolve(self, item: Staged, *, later: bool) -> RowModel | None:
        """The step's whole row: as given, or filled from the version before it."""
        if not item.fill:
            return item.row
        previous = self.prev.row if self.prev is not None else None
        if previous is None and not later:
            same, previous = self._held_around(item)
            if same is not None:  # this very change is held already (a replay)
                return same
        if previous is None:
            self.result.problems.append(toast_problem(self.spec, self.source, item))
            return None
        filled, problems = item.filled(self.spec, previous, self.source)
        self.result.problems.extend(problems)
        return filled.row

    def _held_around(self, item: Staged) -> tuple[RowModel | None, RowModel | None]:
        """The held version observed just before `item` (its predecessor); else, when only
        one held version shares its observation, that version (this very change, a replay)."""
        versions = list(self.known.versions.get(self.key, []))
        if isinstance(self.current, Version):
            versions.append(self.current)
        below = [v for v in versions if v.observed is not None and v.observed < item.observed]
        if below:
            return None, max(below, key=lambda v: v.observed or item.observed).row
        same = [v.row for v in versions if v.observed == item.observed]
        return (same[0] if len(same) == 1 else None), None

    # ---- what latest ends with --------------------------------------------------------

    def _outcome(self, changed_latest: bool) -> None:
        result, key = self.result, self.key
        if not changed_latest:
            (result.late if self.wrote else result.unchanged).append(key)
        elif self.prev is not None:
            self._write_live()
        elif self.tomb is not None:
            result.removed[key] = self._tombstone(self.tomb)
            (result.deleted if self.deletions else result.unchanged).append(key)

    def _tombstone(self, tomb: Staged) -> Tombstone:
        """latest's line for the key this batch ends deleted. It takes the delete's observation
        (what is observed before it stays out), and names the batch whose history object holds
        the key's last row marked deleted: this one when it sent such a row there; else, when
        latest held a tombstone already (a delete delivered again at a later observation, a
        repeated inferred delete), that one's batch, with its delete's time and change."""
        current = self.current
        if isinstance(current, Tombstone) and not self.marked:
            return replace(current, observed=tomb.observed)
        return Tombstone(self.key, tomb.observed, tomb.time, self.batch, tomb.change)

    def _write_live(self) -> None:
        link, result, key = self.prev, self.result, self.key
        assert link is not None
        result.written[key] = Version(link.row, link.observed, link.change)
        if not isinstance(self.current, Version):
            result.inserted.append(key)
        elif link.in_latest:
            result.unchanged.append(key)  # seen again: no new version, a later observation
        else:
            result.updated.append(key)

    def _text(self, row: RowModel) -> str:
        return row_json(self.spec, row)
