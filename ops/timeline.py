"""Row version timelines and point-in-time tables, rebuilt from latest + history.

`latest` plus `history` is a complete version log (DESIGN §3): a version is valid from its own
`last_updated` until the next version's. Late arrivals land in history with an older
`last_updated`, so versions are ordered by `last_updated`, never by the order they were written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.versions import split_audit


@dataclass(frozen=True)
class RowVersion:
    """One version of one row and the interval in which it was the current one."""

    key: Any
    valid_from: datetime
    valid_to: datetime | None  # None: still current
    row: Mapping[str, Any]


def _source_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's own columns: audit columns (`_superseded_at`, `_batch`, `_observed`, any
    underscore column) set aside, as every reader does (shared/versions.py)."""
    plain, _ = split_audit(dict(row))
    return dict(plain)


def _as_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def timelines(
    latest: Iterable[Mapping[str, Any]], history: Iterable[Mapping[str, Any]], primary_key: str
) -> dict[Any, list[RowVersion]]:
    """Every key's versions, oldest first, each with its valid_from / valid_to.

    A silent edit leaves two versions with the same `last_updated`; the one in history was
    replaced by the one in latest, so at equal times history sorts first. Identical copies of a
    version (a row re-read by an overlapping ingest) count once.
    """
    by_key: dict[Any, list[tuple[datetime, int, dict[str, Any]]]] = defaultdict(list)
    for rank, rows in enumerate((history, latest)):
        for row in rows:
            source = _source_row(row)
            entry = (_as_time(source["last_updated"]), rank, source)
            if all(e[0] != entry[0] or e[2] != source for e in by_key[source[primary_key]]):
                by_key[source[primary_key]].append(entry)
    result: dict[Any, list[RowVersion]] = {}
    for key, entries in by_key.items():
        entries.sort(key=lambda e: (e[0], e[1]))
        starts = [e[0] for e in entries]
        ends: list[datetime | None] = [*starts[1:], None]
        result[key] = [
            RowVersion(key, start, end, row)
            for (start, _, row), end in zip(entries, ends, strict=True)
        ]
    return result


def as_of(
    latest: Iterable[Mapping[str, Any]],
    history: Iterable[Mapping[str, Any]],
    primary_key: str,
    at: datetime,
) -> list[Mapping[str, Any]]:
    """The table as it stood at `at`: per key, the version valid then; keys not yet born omitted."""
    table = []
    for _, versions in sorted(timelines(latest, history, primary_key).items()):
        current = [v for v in versions if v.valid_from <= at]
        if current:
            table.append(current[-1].row)
    return table
