"""The merge rules as pure functions: versions in, decisions out. No boto3, no events.

docs/merge_protocol.md, "Version order": versions are ordered by observation. A batch is one
observation; inside it, several versions of one key are ordered by `last_updated`, then file
order. For each key the batch names, latest keeps the version of the latest observation and
every other version it knows of goes to history once. The row latest replaces always goes to
history, so a row that really went back to an earlier content is a new occurrence there; a
version that would go to history for any other reason (an older in-file version, a batch
observed before latest's row) is left out when history already holds its text: it is the same
content seen again, which is also why the same batch applied twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from shared.history import HistoryRow
from shared.observation import Observation
from shared.rows import row_json
from shared.schemas import RowModel
from shared.tables import TableSpec
from shared.versions import Version


@dataclass
class MergeResult:
    written: dict[int, Version] = field(default_factory=dict)  # into latest, by key
    history: list[HistoryRow] = field(default_factory=list)
    inserted: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)

    @property
    def changes_anything(self) -> bool:
        return bool(self.written or self.history)

    @property
    def keys_written(self) -> list[int]:
        return sorted(self.written)

    def extend(self, other: MergeResult) -> None:
        """Put together the results of disjoint keys (partitions of one batch)."""
        self.written.update(other.written)
        self.history.extend(other.history)
        for mine, theirs in (
            (self.inserted, other.inserted),
            (self.updated, other.updated),
            (self.unchanged, other.unchanged),
            (self.late, other.late),
        ):
            mine.extend(theirs)


def primary_key(spec: TableSpec, row: RowModel) -> int:
    key: int = getattr(row, spec.primary_key)
    return key


def versions_by_key(spec: TableSpec, rows: Iterable[RowModel]) -> dict[int, list[RowModel]]:
    """Distinct versions per key, oldest first; equal `last_updated` keeps file order."""
    grouped: dict[int, dict[str, RowModel]] = {}
    for row in rows:
        versions = grouped.setdefault(primary_key(spec, row), {})
        text = row_json(spec, row)
        versions.pop(text, None)  # a repeated version counts where it last appears
        versions[text] = row
    return {
        key: sorted(versions.values(), key=lambda r: r.last_updated)
        for key, versions in grouped.items()
    }


def keys_needing_history(
    spec: TableSpec, held: Mapping[int, Version], staged: Sequence[RowModel], observed: Observation
) -> set[int]:
    """Keys whose staged versions may already be in history: they would go there now (older
    in-file versions, or all of a batch observed before latest's row). Only these need history
    read back; a batch of new observations reads latest and nothing else."""
    needed = set()
    for key, versions in versions_by_key(spec, staged).items():
        current = held.get(key)
        if len(versions) > 1 or (current is not None and not _later(observed, current)):
            needed.add(key)
    return needed


def merge(
    spec: TableSpec,
    held: Mapping[int, Version],
    staged: Sequence[RowModel],
    observed: Observation,
    batch: str,
    known: Collection[str] = (),
) -> MergeResult:
    """Merge one batch (all observed at `observed`) into the rows latest holds for its keys.

    `known` holds the history row texts of (at least) the keys `keys_needing_history` names;
    a staged version found there is not written to history again. The row latest replaces
    always goes to history: by the protocol's invariant it is in latest, so not in history.
    """
    result = MergeResult()
    for key, versions in versions_by_key(spec, staged).items():
        _merge_key(spec, key, held.get(key), versions, observed, batch, known, result)
    result.history.sort(key=lambda h: (primary_key(spec, h.row), h.row.last_updated))
    return result


def _merge_key(
    spec: TableSpec,
    key: int,
    current: Version | None,
    versions: list[RowModel],
    observed: Observation,
    batch: str,
    known: Collection[str],
    result: MergeResult,
) -> None:
    newest = versions[-1]
    # (version, what superseded it: its last_updated) for every version leaving the picture
    leaving: list[tuple[Version, datetime]] = [
        (Version(row, observed), later.last_updated) for row, later in pairwise(versions)
    ]
    if current is None:
        result.inserted.append(key)
        result.written[key] = Version(newest, observed)
    elif row_json(spec, newest) == row_json(spec, current.row):
        result.unchanged.append(key)  # seen again: latest's row (and its observation) stays
    elif _later(observed, current):
        result.updated.append(key)
        result.written[key] = Version(newest, observed)
        result.history.append(HistoryRow(current.row, newest.last_updated, batch, current.observed))
    else:  # an earlier observation than latest's row: latest keeps it
        result.late.append(key)
        leaving.append((Version(newest, observed), current.row.last_updated))
    kept = current.row if current is not None and key not in result.written else newest
    kept_text = row_json(spec, kept)
    for version, superseded_at in leaving:
        text = row_json(spec, version.row)
        if text == kept_text or text in known:
            continue
        result.history.append(HistoryRow(version.row, superseded_at, batch, observed))


def _later(observed: Observation, current: Version) -> bool:
    """Does this batch's observation come after the one that wrote latest's row?"""
    return current.observed is None or observed > current.observed
