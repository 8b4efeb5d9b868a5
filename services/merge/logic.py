"""The merge rules (DESIGN §3) as pure functions: rows in, rows out. No boto3, no events.

A row version is identified by its canonical text (`row_json`), which includes its key and
`last_updated`. For each key the merge looks at every version it knows of (the row in latest,
the versions in the staging file, and, where needed, the versions already in history): the
newest goes to latest, every other version goes to history exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.history import HistoryRow
from shared.rows import row_json
from shared.schemas import RowModel
from shared.tables import TableSpec


@dataclass(frozen=True)
class MergeResult:
    latest: list[RowModel]
    history: list[HistoryRow]
    inserted: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)

    @property
    def latest_changed(self) -> bool:
        return bool(self.inserted or self.updated)

    @property
    def changes_anything(self) -> bool:
        return self.latest_changed or bool(self.history)

    @property
    def keys_written(self) -> list[int]:
        return sorted({*self.inserted, *self.updated})


def primary_key(spec: TableSpec, row: RowModel) -> int:
    key: int = getattr(row, spec.primary_key)
    return key


def _versions_by_key(spec: TableSpec, rows: Iterable[RowModel]) -> dict[int, list[RowModel]]:
    """Distinct versions per key, oldest first; equal `last_updated` keeps file order."""
    grouped: dict[int, dict[str, RowModel]] = {}
    for row in rows:
        grouped.setdefault(primary_key(spec, row), {})[row_json(spec, row)] = row
    ordered = {}
    for key, versions in grouped.items():
        # a stable sort: of two versions with one last_updated, the later in the file wins
        ordered[key] = sorted(versions.values(), key=lambda r: r.last_updated)
    return ordered


def keys_needing_history(
    spec: TableSpec, latest: Sequence[RowModel], staged: Sequence[RowModel]
) -> set[int]:
    """Keys whose staged versions may already be in history: late rows, older in-file versions.

    Only these need history read back (rare), so a normal merge reads latest and nothing else.
    """
    current = {primary_key(spec, row): row for row in latest}
    needed = set()
    for key, versions in _versions_by_key(spec, staged).items():
        newest = versions[-1]
        held = current.get(key)
        if len(versions) > 1 or (held is not None and newest.last_updated < held.last_updated):
            needed.add(key)
    return needed


def merge(
    spec: TableSpec,
    latest: Sequence[RowModel],
    staged: Sequence[RowModel],
    batch: str,
    history: Iterable[RowModel] = (),
) -> MergeResult:
    """Merge one staging file into latest.

    `history` holds the versions already in history for (at least) the keys named by
    `keys_needing_history`; a staged version found there is not written to history again.
    The row latest held when it is replaced always is: a committed history cannot hold a
    version latest still holds, so a copy found there belongs to a merge that has not
    committed (it crashed after writing its history), whose retry may drop it.
    """
    current = {primary_key(spec, row): row for row in latest}
    in_history: dict[int, dict[str, RowModel]] = {}
    for row in history:
        in_history.setdefault(primary_key(spec, row), {})[row_json(spec, row)] = row

    result = MergeResult(latest=[], history=[])
    for key, versions in _versions_by_key(spec, staged).items():
        newest = versions[-1]
        held = current.get(key)
        superseded = list(versions[:-1])
        replaced = None
        if held is None:
            result.inserted.append(key)
            current[key] = newest
        elif newest.last_updated > held.last_updated or (
            newest.last_updated == held.last_updated
            and row_json(spec, newest) != row_json(spec, held)
        ):  # newer, or a silent edit (same last_updated, other content)
            result.updated.append(key)
            superseded.append(held)
            replaced = row_json(spec, held)
            current[key] = newest
        elif newest.last_updated == held.last_updated:
            result.unchanged.append(key)
        else:
            result.late.append(key)
            superseded.append(newest)
        already = {text: row for text, row in in_history.get(key, {}).items() if text != replaced}
        result.history.extend(_to_history(spec, current[key], superseded, already, batch))

    result.latest.extend(current[key] for key in sorted(current))
    result.history.sort(key=lambda h: (primary_key(spec, h.row), h.row.last_updated))
    return result


def _to_history(
    spec: TableSpec,
    kept: RowModel,
    superseded: Sequence[RowModel],
    already: Mapping[str, RowModel],
    batch: str,
) -> list[HistoryRow]:
    """History rows for one key: each superseded version once, unless history has it already.

    `_superseded_at` is the `last_updated` of the next newer version known (the row that
    replaced it); a version with no newer one (a silent edit) takes the kept row's.
    """
    kept_text = row_json(spec, kept)
    known = [kept, *superseded, *already.values()]
    rows: dict[str, HistoryRow] = {}
    for row in superseded:
        text = row_json(spec, row)
        if text == kept_text or text in already or text in rows:
            continue
        newer = [v.last_updated for v in known if v.last_updated > row.last_updated]
        rows[text] = HistoryRow(row, min(newer, default=kept.last_updated), batch)
    return list(rows.values())
