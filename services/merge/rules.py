"""The merge rules as pure functions: versions in, decisions out. No boto3, no events.

docs/merge_protocol.md, "Version order": versions are ordered by observation. A batch is one
observation; inside it, several versions of one key are ordered by `last_updated`, then file
order, and the last is the batch's version of the key. A batch observed after latest's row
(or naming a new key) puts its version into latest; the row it replaces always goes to
history (it is in latest, so not in history), so a row that really went back to an earlier
content is a new occurrence there; latest's row seen again is not a new version but takes the
later observation (a file observed in between must not beat it). A batch observed before
latest's row changes nothing in latest. Any other version — an older one inside a file, or
one of an earlier observation — goes to history unless history or latest already holds that
content: the same content seen again (a file may repeat versions, as a cumulative upload
does), which is also why the same batch applied twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    """Keys whose staged versions may already be in history: a file's versions that it only
    passes through, and every version of a batch observed before latest's row (a delayed
    delivery, a redelivery, a replay). Only these need history read back (rare); a batch of
    one new version per key reads latest and nothing else."""
    return {
        key
        for key, versions in versions_by_key(spec, staged).items()
        if len(versions) > 1
        or ((current := held.get(key)) is not None and not _later(observed, current))
    }


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
    if current is not None and not _later(observed, current):
        _apply_earlier(spec, key, current, versions, observed, batch, known, result)
        return
    newest = versions[-1]
    taken = {row_json(spec, newest)}  # texts this key now has in latest or sends to history
    if current is None:
        result.inserted.append(key)
    elif row_json(spec, current.row) in taken:
        result.unchanged.append(key)  # seen again: no new version
    else:  # latest's row always goes: it is in latest, so not in history
        result.updated.append(key)
        result.history.append(HistoryRow(current.row, newest.last_updated, batch, current.observed))
        taken.add(row_json(spec, current.row))
    # latest's row seen again still takes this observation: a file observed in between must
    # not beat it
    result.written[key] = Version(newest, observed)
    # the file's older versions (a file may repeat versions, as a cumulative upload does)
    for row, later in pairwise(versions):
        text = row_json(spec, row)
        if text in taken or text in known:
            continue
        taken.add(text)
        result.history.append(HistoryRow(row, later.last_updated, batch, observed))


def _apply_earlier(
    spec: TableSpec,
    key: int,
    current: Version,
    versions: list[RowModel],
    observed: Observation,
    batch: str,
    known: Collection[str],
    result: MergeResult,
) -> None:
    """Observed before latest's row: latest keeps it; the file's versions go to history, each
    once, unless history (or latest) already has that content."""
    held = row_json(spec, current.row)
    if [row_json(spec, row) for row in versions] == [held]:
        result.unchanged.append(key)
        return
    result.late.append(key)
    taken = {held}
    for row, later in zip(versions, [*versions[1:], current.row], strict=True):
        text = row_json(spec, row)
        if text in taken or text in known:
            continue
        taken.add(text)
        result.history.append(HistoryRow(row, later.last_updated, batch, observed))


def _later(observed: Observation, current: Version) -> bool:
    """Does this batch's observation come after the one that wrote latest's row?"""
    return current.observed is None or observed > current.observed
