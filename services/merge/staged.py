"""A staged file's rows as the merge applies them: each with its key, observation and change.

Two kinds of row (docs/merge_protocol.md, "Version order"):
- a **polled** row (no `_lsn`): a version read by a timestamp query; observed when its file
  was read, its operation inferred when merged (insert when latest has no row for the key,
  else update). `_op: delete` makes it a tombstone observed then too (an inferred delete);
- a **log** row (`_lsn`, with `_op` and `_commit_ts`): one change from the source's WAL, in
  commit order, several per key allowed; observed at its commit position,
  `Observation(at=_commit_ts, sequencer=lsn_value(_lsn))`.

A delete validates only its primary key; its other columns, when given, must be the whole old
row (REPLICA IDENTITY FULL). An update that lists columns in `_toast_unchanged` leaves those
out: it is validated without them and filled from the key's previous version when merged
(services/merge/rules.py). Everything else is validated as the table's row; every problem is
a `RowProblem` naming file, row, key, field and value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from shared.changes import Change, Operation, lsn_value, naive_utc
from shared.observation import Observation
from shared.rows import DUPLICATES, RowProblem, decode_rows, row_json, validate_row
from shared.schemas import RowModel
from shared.tables import TableSpec
from shared.types import INT64_MAX, INT64_MIN
from shared.versions import split_audit

_MAX_VALUE_TEXT = 80


def _commit_time(value: Any) -> Any:
    if isinstance(value, str):
        return naive_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return value


def _lsn(value: Any) -> Any:
    if isinstance(value, str):
        lsn_value(value)  # raises ValueError: not an LSN
    return value


class ChangeColumns(BaseModel):
    """The underscore columns a staged row may carry (the boundary: anything else is refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    op: Literal["insert", "update", "delete"] | None = Field(None, alias="_op")
    commit_ts: Annotated[datetime | None, BeforeValidator(_commit_time)] = Field(
        None, alias="_commit_ts"
    )
    lsn: Annotated[str | None, BeforeValidator(_lsn)] = Field(None, alias="_lsn")
    xid: int | None = Field(None, alias="_xid")
    toast_unchanged: list[str] = Field(default_factory=list, alias="_toast_unchanged")


@dataclass(frozen=True)
class Staged:
    """One staged row version (or tombstone) of one key."""

    key: int
    index: int  # its place in the file
    observed: Observation
    row: RowModel | None  # None: a tombstone of its key alone, or a row still to fill
    change: Change | None = None  # None: a polled row (its operation inferred when merged)
    fill: tuple[str, ...] = ()  # unchanged TOAST columns, from the previous version
    given: Mapping[str, Any] = field(default_factory=dict)  # a row to fill: its columns

    @classmethod
    def polled(cls, spec: TableSpec, row: RowModel, observed: Observation, index: int) -> Staged:
        key: int = getattr(row, spec.primary_key)
        return cls(key, index, observed, row)

    @property
    def deleted(self) -> bool:
        return self.change is not None and self.change.op is Operation.DELETE

    @property
    def logged(self) -> bool:
        """A change read from the log (ordered by its own commit position)."""
        return self.change is not None and self.change.lsn is not None

    @property
    def time(self) -> datetime:
        """When it was made: its commit (log, delete), else the row's `last_updated`."""
        if self.change is not None:
            return self.change.commit_ts
        assert self.row is not None  # a polled row that is not a delete is a whole row
        return self.row.last_updated

    def filled(
        self, spec: TableSpec, previous: RowModel, source: str
    ) -> tuple[Staged, list[RowProblem]]:
        """This row with its unchanged TOAST columns taken from `previous`."""
        values = json.loads(row_json(spec, previous), parse_float=Decimal)
        raw = {**self.given, **{name: values[name] for name in self.fill}}
        row, problems = validate_row(spec, raw, source, self.index)
        return Staged(self.key, self.index, self.observed, row, self.change), problems


@dataclass
class StagedReport:
    rows_read: int
    items: list[Staged]
    problems: list[RowProblem]
    # columns the rows hold that the table's model does not name, in the order first seen:
    # schema drift, for the table's policy (their rows' problems say "unknown column")
    new_columns: tuple[str, ...] = ()


def load_staged(spec: TableSpec, data: bytes, source: str, observed: Observation) -> StagedReport:
    """Decode and validate a staged file (raises FileFormatError if it is not rows at all)."""
    raws = decode_rows(data, source)
    items: list[Staged] = []
    problems: list[RowProblem] = []
    known = frozenset(spec.columns)
    new: dict[str, None] = {}
    for index, raw in enumerate(raws):
        if isinstance(raw, dict) and not raw.keys() <= known:
            new.update(dict.fromkeys(c for c in raw if c not in known and _is_column(c)))
        item, found = _staged(spec, raw, source, index, observed)
        problems += found
        if item is not None and not found:
            items.append(item)
    return StagedReport(len(raws), items, problems, tuple(new))


def _is_column(name: object) -> bool:
    """A source column (not an audit column, not the decoder's duplicates marker)."""
    return isinstance(name, str) and not name.startswith("_") and name != DUPLICATES


def _staged(
    spec: TableSpec, raw: Any, source: str, index: int, observed: Observation
) -> tuple[Staged | None, list[RowProblem]]:
    plain, audit = split_audit(raw)
    key = _key(spec, plain)
    columns, problems = _change_columns(spec, audit, source, index, key)
    if columns is None:
        return None, problems
    change, at = _change(columns, observed)
    if change is not None and change.op is Operation.DELETE and isinstance(plain, dict):
        return _tombstone(spec, plain, source, index, key, at, change)
    if columns.toast_unchanged:
        return _to_fill(spec, plain, source, index, at, change, tuple(columns.toast_unchanged))
    row, problems = validate_row(spec, plain, source, index)
    if row is None:
        return None, problems
    return Staged(getattr(row, spec.primary_key), index, at, row, change), []


def _change(columns: ChangeColumns, observed: Observation) -> tuple[Change | None, Observation]:
    """The row's change and observation: a log row's own, else its file's."""
    if columns.lsn is not None:
        assert columns.op is not None  # checked: a log row has both
        assert columns.commit_ts is not None
        change = Change(Operation(columns.op), columns.commit_ts, columns.lsn, columns.xid)
        return change, Observation(columns.commit_ts, lsn_value(columns.lsn))
    if columns.op == "delete":  # an inferred delete, observed with its file
        at = columns.commit_ts or naive_utc(observed.at)
        return Change(Operation.DELETE, at, None, columns.xid), observed
    return None, observed


def _change_columns(
    spec: TableSpec, audit: dict[str, Any], source: str, index: int, key: int | None
) -> tuple[ChangeColumns | None, list[RowProblem]]:
    try:
        columns = ChangeColumns.model_validate(audit)
    except ValidationError as exc:
        return None, [
            _problem(spec, source, index, key, _loc(e), e["msg"], e.get("input"))
            for e in exc.errors(include_url=False)
        ]
    found = []
    if columns.lsn is not None and (columns.op is None or columns.commit_ts is None):
        found.append("a log row (with _lsn) needs _op and _commit_ts")
    if columns.toast_unchanged and (columns.op != "update" or columns.lsn is None):
        found.append("_toast_unchanged is for update rows from the log only")
    bad = [c for c in columns.toast_unchanged if c not in spec.columns or c == spec.primary_key]
    if bad:
        found.append(f"_toast_unchanged names no column of the table: {bad}")
    problems = [_problem(spec, source, index, key, None, text, None) for text in found]
    return (None if problems else columns), problems


def _tombstone(
    spec: TableSpec,
    plain: dict[str, Any],
    source: str,
    index: int,
    key: int | None,
    observed: Observation,
    change: Change,
) -> tuple[Staged | None, list[RowProblem]]:
    """A delete: its key, and the old row when it gives more than the key."""
    if key is None:
        message = "a delete needs its primary key (an integer in range)"
        return None, [
            _problem(
                spec, source, index, None, spec.primary_key, message, plain.get(spec.primary_key)
            )
        ]
    if set(plain) == {spec.primary_key}:
        return Staged(key, index, observed, None, change), []
    row, problems = validate_row(spec, plain, source, index)
    if row is None:
        return None, problems
    return Staged(key, index, observed, row, change), []


def _to_fill(
    spec: TableSpec,
    plain: Any,
    source: str,
    index: int,
    observed: Observation,
    change: Change | None,
    fill: tuple[str, ...],
) -> tuple[Staged | None, list[RowProblem]]:
    """An update leaving out unchanged TOAST values: valid apart from those, filled later."""
    key = _key(spec, plain)
    given = [name for name in fill if isinstance(plain, dict) and name in plain]
    if given:
        message = "column listed in _toast_unchanged is given too"
        return None, [_problem(spec, source, index, key, given[0], message, None)]
    row, problems = validate_row(spec, plain, source, index, absent=fill)
    if problems or key is None:
        return None, problems
    if row is not None:  # nothing was left out after all
        return Staged(key, index, observed, row, change), []
    return Staged(key, index, observed, None, change, fill, dict(plain)), []


def _key(spec: TableSpec, plain: Any) -> int | None:
    value = plain.get(spec.primary_key) if isinstance(plain, dict) else None
    return value if type(value) is int and INT64_MIN <= value <= INT64_MAX else None


def _loc(error: Any) -> str | None:
    return ".".join(str(part) for part in error["loc"]) or None


def _problem(
    spec: TableSpec,
    source: str,
    index: int,
    key: int | None,
    name: str | None,
    message: str,
    value: Any,
) -> RowProblem:
    text = None if value is None else repr(value)
    if text is not None and len(text) > _MAX_VALUE_TEXT:
        text = f"{text[:_MAX_VALUE_TEXT]}... ({len(text)} chars)"
    return RowProblem(
        table=spec.name,
        source=source,
        row_index=index,
        primary_key=key,
        field=name,
        message=message,
        value=text,
    )


def toast_problem(spec: TableSpec, source: str, item: Staged) -> RowProblem:
    """A row whose unchanged TOAST values have no previous version to come from."""
    return _problem(
        spec,
        source,
        item.index,
        item.key,
        item.fill[0],
        f"unchanged TOAST value(s) {list(item.fill)} and no previous version of key "
        f"{item.key} to take them from (neither latest nor this file holds one)",
        None,
    )
