"""A row version as latest stores it: the canonical row plus when it was observed.

latest's rows carry audit columns: the change that made the version (`_op`, `_commit_ts`, in
log mode `_lsn`, `_xid`: shared/changes.py) and `_observed` (shared/observation.py), last.
Every reader strips underscore columns (`split_audit`) before validating a row against its
table's schema, so the row models stay the source's columns and nothing else.

A deleted key keeps a **tombstone line** in latest: its key, `_deleted_at`, `_batch`, the
delete's change and observation, and no other column. It is how the merge orders a version
that arrives after the delete but was observed before it (a delayed file, a replay, the
baseline of the log handoff) without reading history. Readers never see it: `load_versions`
gives the live rows only (docs/merge_protocol.md, "Tombstones").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.changes import DELETED_AT_COLUMN, Change, naive_utc
from shared.observation import OBSERVED_COLUMN, Observation
from shared.rows import (
    FileFormatError,
    ValidationReport,
    decode_rows,
    dump_lines,
    row_json,
    validate_rows,
)
from shared.schemas import RowModel
from shared.tables import TableSpec

BATCH_COLUMN = "_batch"


@dataclass(frozen=True)
class Version:
    """One row version, its observation (None: written before observations were kept) and
    the change that made it (None: written before changes were kept)."""

    row: RowModel
    observed: Observation | None
    change: Change | None = None


@dataclass(frozen=True)
class Tombstone:
    """A deleted key as latest keeps it: when the delete committed and was observed."""

    key: int
    observed: Observation
    deleted_at: datetime
    batch: str
    change: Change | None = None


def audit_text(columns: dict[str, Any]) -> str:
    """`"name":value` pairs, comma-separated, in the order given (to append to a row's text)."""
    return ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in columns.items())


def version_json(spec: TableSpec, version: Version) -> str:
    """The canonical text of a latest row: the row's, with its change and `_observed`."""
    text = row_json(spec, version.row)
    audit = version.change.columns() if version.change is not None else {}
    if version.observed is not None:
        audit[OBSERVED_COLUMN] = version.observed.text
    return f"{text[:-1]},{audit_text(audit)}}}" if audit else text


def tombstone_json(spec: TableSpec, tombstone: Tombstone) -> str:
    """The canonical text of latest's tombstone line of a deleted key."""
    audit: dict[str, Any] = {
        spec.primary_key: tombstone.key,
        DELETED_AT_COLUMN: tombstone.deleted_at.isoformat(timespec="microseconds"),
        BATCH_COLUMN: tombstone.batch,
    }
    if tombstone.change is not None:
        audit.update(tombstone.change.columns())
    audit[OBSERVED_COLUMN] = tombstone.observed.text
    return "{" + audit_text(audit) + "}"


def is_tombstone(raw: Any) -> bool:
    """A tombstone line of latest (a live row never has `_deleted_at`)."""
    return isinstance(raw, dict) and DELETED_AT_COLUMN in raw


def tombstone_of(spec: TableSpec, raw: dict[str, Any], source: str) -> Tombstone:
    """A tombstone line read back (ours: anything wrong is an error)."""
    try:
        key = raw[spec.primary_key]
        if type(key) is not int:
            raise TypeError(key)
        return Tombstone(
            key,
            Observation.parse(raw[OBSERVED_COLUMN]),
            naive_utc(datetime.fromisoformat(raw[DELETED_AT_COLUMN])),
            str(raw.get(BATCH_COLUMN, "")),
            Change.of_audit(raw),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(source, f"tombstone line invalid: {exc!r}") from None


def dump_versions(spec: TableSpec, versions: Iterable[Version]) -> bytes:
    """A canonical file of latest rows, in the order given: `[`, a row per line, `]`."""
    return dump_lines([version_json(spec, version) for version in versions])


def split_audit(raw: Any) -> tuple[Any, dict[str, Any]]:
    """A raw row without its underscore (audit) columns, and those columns."""
    if not isinstance(raw, dict):
        return raw, {}
    row: dict[Any, Any] = {}
    audit: dict[str, Any] = {}
    for name, value in raw.items():  # one pass: every stored row read comes through here
        if str(name)[:1] == "_":
            audit[str(name)] = value
        else:
            row[name] = value
    return (row, audit) if audit else (raw, audit)


def observed_of(audit: dict[str, Any]) -> Observation | None:
    text = audit.get(OBSERVED_COLUMN)
    return Observation.parse(text) if isinstance(text, str) else None


def load_versions(spec: TableSpec, data: bytes, source: str) -> list[Version]:
    """The live rows of a file of latest rows (tombstone lines left out); ours: any invalid
    row is an error, never a rejection."""
    return load_latest(spec, data, source)[0]


def load_latest(spec: TableSpec, data: bytes, source: str) -> tuple[list[Version], list[Tombstone]]:
    """A file of latest rows: its live versions and its tombstone lines."""
    raws = decode_rows(data, source)
    tombstones = [tombstone_of(spec, raw, source) for raw in raws if is_tombstone(raw)]
    live = [raw for raw in raws if not is_tombstone(raw)]
    return versions_of(spec, live, source), tombstones


def versions_of(spec: TableSpec, raws: Sequence[Any], source: str) -> list[Version]:
    """Live latest rows as decoded (audit columns included), validated; ours: any invalid row
    is an error."""
    report, audits = validate_stripped(spec, raws, source)
    if report.problems:
        raise FileFormatError(source, f"latest rows invalid: {report.problems[0]}")
    return [
        Version(row, observed_of(audit), Change.of_audit(audit))
        for row, audit in zip(report.rows, audits, strict=True)
    ]


def validate_stripped(
    spec: TableSpec, raws: Sequence[Any], source: str
) -> tuple[ValidationReport, list[dict[str, Any]]]:
    """Validate rows with their audit columns set aside (returned in row order)."""
    plain, audits = [], []
    for raw in raws:
        row, audit = split_audit(raw)
        plain.append(row)
        audits.append(audit)
    return validate_rows(spec, plain, source), audits
