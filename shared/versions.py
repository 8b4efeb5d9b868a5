"""A row version as latest stores it: the canonical row plus when it was observed.

latest's rows carry one audit column, `_observed` (shared/observation.py); every reader strips
underscore columns (`split_audit`) before validating a row against its table's schema, so the
row models stay the source's columns and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Version:
    """One row version and its observation (None: written before observations were kept)."""

    row: RowModel
    observed: Observation | None


def version_json(spec: TableSpec, version: Version) -> str:
    """The canonical text of a latest row: the row's, with `_observed` appended."""
    text = row_json(spec, version.row)
    if version.observed is None:
        return text
    return f"{text[:-1]},{json.dumps(OBSERVED_COLUMN)}:{json.dumps(version.observed.text)}}}"


def dump_versions(spec: TableSpec, versions: Iterable[Version]) -> bytes:
    """A canonical file of latest rows, in the order given: `[`, a row per line, `]`."""
    return dump_lines([version_json(spec, version) for version in versions])


def split_audit(raw: Any) -> tuple[Any, dict[str, Any]]:
    """A raw row without its underscore (audit) columns, and those columns."""
    if not isinstance(raw, dict) or not any(str(k).startswith("_") for k in raw):
        return raw, {}
    row = {k: v for k, v in raw.items() if not str(k).startswith("_")}
    return row, {k: v for k, v in raw.items() if str(k).startswith("_")}


def observed_of(audit: dict[str, Any]) -> Observation | None:
    text = audit.get(OBSERVED_COLUMN)
    return Observation.parse(text) if isinstance(text, str) else None


def load_versions(spec: TableSpec, data: bytes, source: str) -> list[Version]:
    """A file of latest rows (ours: any invalid row is an error, never a rejection)."""
    raws = decode_rows(data, source)
    report, audits = validate_stripped(spec, raws, source)
    if report.problems:
        raise FileFormatError(source, f"latest rows invalid: {report.problems[0]}")
    return [
        Version(row, observed_of(audit)) for row, audit in zip(report.rows, audits, strict=True)
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
