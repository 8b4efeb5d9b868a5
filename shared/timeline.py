"""Row version timelines and point-in-time tables, rebuilt from latest + history.

`latest` plus `history` is a complete version log (docs/merge_protocol.md, "The promise").
Versions are ordered as the merge orders them, by **observation** (docs/merge_protocol.md,
"Version order"), never by `last_updated` across files nor by the order they were written:
each row carries its observation in the audit column `_observed`. A version is valid from its
observation until the next version's; latest's row is the current one. Versions written
before observations were kept (no `_observed`) come first, ordered and dated by
`last_updated` as before. Times are UTC and naive, like the rows' own timestamps (a naive
`at` is read as UTC).

Each version shows the change that made it (`_op`) and, when a delete ended it, when
(`_deleted_at`): a deleted version is valid until its delete, and a key whose last version
was deleted is absent from `as_of` after that time.

Read by `ingestctl history` and `asof` (ops/inspection.py) and by the transform's change
tables (services/transform/changes.py): one derivation of a row's versions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.changes import DELETED_AT_COLUMN, OP_COLUMN, Change
from shared.history_lookup import committed_texts
from shared.observation import Observation
from shared.reader import latest_versions_of, read_latest_versions
from shared.rows import decode_rows, dump_lines
from shared.storage import ObjectStore
from shared.tables import TableSpec
from shared.versions import observed_of, split_audit, version_json


@dataclass(frozen=True)
class RowVersion:
    """One version of one row and the interval in which it was the current one."""

    key: Any
    valid_from: datetime
    valid_to: datetime | None  # None: still current
    row: Mapping[str, Any]
    observed: Observation | None = None  # None: written before observations were kept
    op: str | None = None  # insert / update (None: written before changes were kept)
    deleted_at: datetime | None = None  # a delete ended this version
    change: Change | None = None  # the change that made it (commit time, position)


@dataclass(frozen=True)
class Seen:
    """A stored row: its own columns and its observation (audit columns set aside)."""

    row: dict[str, Any]
    observed: Observation | None
    op: str | None = None
    deleted_at: datetime | None = None
    change: Change | None = None

    @classmethod
    def of(cls, stored: Mapping[str, Any]) -> Seen:
        plain, audit = split_audit(dict(stored))
        op, deleted = audit.get(OP_COLUMN), audit.get(DELETED_AT_COLUMN)
        return cls(
            dict(plain),
            observed_of(audit),
            op if isinstance(op, str) else None,
            naive_utc(_as_time(deleted)) if deleted is not None else None,
            Change.of_audit(audit),
        )

    @property
    def last_updated(self) -> datetime:
        return naive_utc(_as_time(self.row["last_updated"]))

    @property
    def start(self) -> datetime:
        """When it became current: its observation, else (older rows) its `last_updated`."""
        return self.last_updated if self.observed is None else naive_utc(self.observed.at)

    def order(self) -> tuple[Any, ...]:
        """Unobserved versions first (by `last_updated`), then by observation; inside one
        observation (one batch), by `last_updated`, as the merge orders a file's versions."""
        if self.observed is None:
            return (0, self.last_updated)
        return (1, self.observed, self.last_updated)


def _as_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def timelines(
    latest: Iterable[Mapping[str, Any]], history: Iterable[Mapping[str, Any]], primary_key: str
) -> dict[Any, list[RowVersion]]:
    """Every key's versions, oldest first, each with its valid_from / valid_to.

    Rows are as latest and history store them (audit columns included). History's versions
    are ordered by observation (equal ones keep the order given); latest's row comes last, as
    it is the current one. A version seen again right after itself (an overlapping re-read)
    counts once, from its first sighting; the same content again after another version (a
    row that really went back) is a new version.
    """
    return seen_timelines(map(Seen.of, latest), map(Seen.of, history), primary_key)


def seen_timelines(
    latest: Iterable[Seen], history: Iterable[Seen], primary_key: str
) -> dict[Any, list[RowVersion]]:
    """`timelines` of rows already seen (Seen.of)."""
    older: dict[Any, list[Seen]] = defaultdict(list)
    for seen in history:
        older[seen.row[primary_key]].append(seen)
    current = {seen.row[primary_key]: seen for seen in latest}
    result: dict[Any, list[RowVersion]] = {}
    for key in older.keys() | current.keys():
        ordered = sorted(older.get(key, []), key=Seen.order)
        if key in current:
            ordered.append(current[key])
        result[key] = _intervals(key, _distinct(ordered))
    return result


def counted(ordered: Sequence[Seen]) -> list[bool]:
    """Which versions count: each but one equal (in its own columns) to the last counted one
    before it, unless that one was a delete (a row that really came back)."""
    flags: list[bool] = []
    last: Seen | None = None
    for seen in ordered:
        keep = last is None or last.row != seen.row or last.deleted_at is not None
        flags.append(keep)
        last = seen if keep else last
    return flags


def _distinct(ordered: Sequence[Seen]) -> list[Seen]:
    return [seen for seen, keep in zip(ordered, counted(ordered), strict=True) if keep]


def _intervals(key: Any, ordered: Sequence[Seen]) -> list[RowVersion]:
    """valid_from = each version's start, valid_to = the next one's. A start later than a
    following version's is moved back to it (no interval ends before it begins): e.g. a
    version without observation dated after the first observed one, or an older in-file
    version of a batch that saw latest's (earlier observed) row again."""
    starts = [seen.start for seen in ordered]
    for i in range(len(starts) - 2, -1, -1):
        starts[i] = min(starts[i], starts[i + 1])
    ends: list[datetime | None] = [*starts[1:], None]
    for i, seen in enumerate(ordered):  # a delete ends its version (and no later than next)
        if seen.deleted_at is not None:
            end = ends[i]
            ends[i] = seen.deleted_at if end is None else min(end, max(seen.deleted_at, starts[i]))
    return [
        RowVersion(key, start, end, seen.row, seen.observed, seen.op, seen.deleted_at, seen.change)
        for seen, start, end in zip(ordered, starts, ends, strict=True)
    ]


def stored_versions(
    store: ObjectStore, spec: TableSpec, keys: set[int] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """latest's rows and every history row (of `keys`; None: all) as they are stored:
    canonical dicts with their audit columns (`_observed`, which orders them; `timelines`
    sets the others aside). History comes from its index (shared/history_lookup.py)."""
    versions = (
        read_latest_versions(store, spec) if keys is None else latest_versions_of(store, spec, keys)
    )
    latest = stored_rows([version_json(spec, v) for v in versions])
    history = stored_rows(committed_texts(store, spec, keys))
    return latest, history


def stored_rows(texts: list[str]) -> list[dict[str, Any]]:
    """Row texts as dicts, numbers read as the row writer wrote them (money stays Decimal)."""
    return [dict(raw) for raw in decode_rows(dump_lines(texts), "stored rows")]


def key_timelines(
    store: ObjectStore, spec: TableSpec, keys: set[int] | None = None
) -> dict[Any, list[RowVersion]]:
    """The versions of `keys` (None: every key) as latest and history hold them now: what
    `ingestctl history` shows and the transform's change tables keep."""
    latest, history = stored_versions(store, spec, keys)
    return timelines(latest, history, spec.primary_key)


def as_of(
    latest: Iterable[Mapping[str, Any]],
    history: Iterable[Mapping[str, Any]],
    primary_key: str,
    at: datetime,
) -> list[Mapping[str, Any]]:
    """The table as it stood at `at`: per key, the last version valid from `at` or before;
    keys not yet born omitted. Sorted by key."""
    return table_at(timelines(latest, history, primary_key), at)


def table_at(
    versions_by_key: Mapping[Any, list[RowVersion]], at: datetime
) -> list[Mapping[str, Any]]:
    """`as_of` over timelines already built."""
    at = naive_utc(at)
    table = []
    for _, versions in sorted(versions_by_key.items()):
        current = [v for v in versions if v.valid_from <= at]
        if current and not (current[-1].valid_to is not None and current[-1].valid_to <= at):
            table.append(current[-1].row)
    return table
