"""Reading, validating and writing table rows: one canonical JSON form per row.

The merge compares rows by content, so the same row must always give the same bytes: columns
in a fixed order, timestamps with six fraction digits, money as an exact JSON number with no
trailing zeros. JSON is read with `Decimal` for every non-integer number so that money never
passes through a binary float.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.schemas import RowModel
from shared.tables import TableSpec
from shared.types import format_money, format_timestamp

_MAX_VALUE_TEXT = 80


class FileFormatError(ValueError):
    """A file that is not a JSON array of rows (or JSON Lines, where allowed)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class RowProblem(BaseModel):
    """One thing wrong with one row: where it is and what is wrong."""

    model_config = ConfigDict(defer_build=True)

    table: str
    source: str
    row_index: int
    primary_key: int | None
    field: str | None
    message: str
    value: str | None

    def __str__(self) -> str:
        where = f"{self.source}[{self.row_index}]"
        key = "" if self.primary_key is None else f" key={self.primary_key}"
        field = "" if self.field is None else f" field {self.field}"
        value = "" if self.value is None else f" (value {self.value})"
        return f"{where} table {self.table}{key}{field}: {self.message}{value}"


@dataclass
class ValidationReport:
    """The rows of one file that passed, and every problem of the ones that did not."""

    table: str
    source: str
    rows_read: int
    rows: list[RowModel]
    problems: list[RowProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


def decode_rows(data: bytes, source: str, *, allow_json_lines: bool = False) -> list[Any]:
    """Parse a file's bytes into a list of raw rows; FileFormatError names what is wrong."""
    try:
        text = data.decode("utf-8-sig")  # a BOM is tolerated, as JSON parsers may
    except UnicodeDecodeError as exc:
        raise FileFormatError(source, f"not UTF-8 text (byte {exc.start})") from None
    stripped = text.strip()
    if not stripped:
        return []
    if allow_json_lines and stripped.startswith("{"):
        return _decode_json_lines(stripped, source)
    try:
        parsed = json.loads(stripped, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise FileFormatError(
            source, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise FileFormatError(source, "not valid JSON: nested too deeply") from None
    if not isinstance(parsed, list):
        raise FileFormatError(source, f"expected a JSON array of rows, got {_kind(parsed)}")
    return parsed


def _decode_json_lines(text: str, source: str) -> list[Any]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line, parse_float=Decimal))
        except json.JSONDecodeError as exc:
            raise FileFormatError(source, f"line {number} is not valid JSON: {exc.msg}") from None
    return rows


def _kind(value: Any) -> str:
    return {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _short(value: Any) -> str:
    text = repr(value)
    if len(text) > _MAX_VALUE_TEXT:
        return f"{text[:_MAX_VALUE_TEXT]}... ({len(text)} chars)"
    return text


def validate_rows(spec: TableSpec, raw_rows: Sequence[Any], source: str) -> ValidationReport:
    """Validate every row; collect every problem rather than stopping at the first."""
    valid: list[RowModel] = []
    problems: list[RowProblem] = []
    for index, raw in enumerate(raw_rows):
        if not isinstance(raw, dict):
            problems.append(
                RowProblem(
                    table=spec.name,
                    source=source,
                    row_index=index,
                    primary_key=None,
                    field=None,
                    message=f"row must be a JSON object, got {_kind(raw)}",
                    value=_short(raw),
                )
            )
            continue
        key = raw.get(spec.primary_key)
        known_key = key if isinstance(key, int) and not isinstance(key, bool) else None
        try:
            valid.append(spec.row_model.model_validate(raw))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                field = ".".join(str(part) for part in error["loc"]) or None
                message = {
                    "extra_forbidden": "unknown column (not in the table's schema)",
                    "missing": "required column is missing",
                }.get(error["type"], error["msg"])
                value = None if error["type"] == "missing" else _short(error["input"])
                problems.append(
                    RowProblem(
                        table=spec.name,
                        source=source,
                        row_index=index,
                        primary_key=known_key,
                        field=field,
                        message=message,
                        value=value,
                    )
                )
    return ValidationReport(
        table=spec.name, source=source, rows_read=len(raw_rows), rows=valid, problems=problems
    )


_encode_text = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses


def _encode_value(value: Any) -> str:
    kind = type(value)  # exact types first: the common cases, and bool is not int here
    if kind is int:
        return str(value)
    if kind is str:
        return _encode_text(value)
    if kind is datetime:
        return '"' + format_timestamp(value) + '"'
    if kind is Decimal:
        return _money_text(value)
    return json.dumps(value, ensure_ascii=False)


def _money_text(value: Decimal) -> str:
    """`format_money`, faster: plain notation with the fraction's trailing zeros cut."""
    if not value.is_finite():
        return format_money(value)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "0", "") else text


@lru_cache(maxsize=64)
def _column_prefixes(columns: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((name, json.dumps(name) + ":") for name in columns)


def row_json(spec: TableSpec, row: RowModel) -> str:
    """The canonical JSON text of one row."""
    values = row.__dict__
    parts = [
        prefix + _encode_value(values[name]) for name, prefix in _column_prefixes(spec.columns)
    ]
    return "{" + ",".join(parts) + "}"


def dump_rows(spec: TableSpec, rows: Iterable[RowModel]) -> bytes:
    """The canonical bytes of a file of rows: a JSON array, one row per line."""
    return dump_lines([row_json(spec, row) for row in rows])


def dump_lines(lines: list[str]) -> bytes:
    """A JSON array of the given row texts, one per line (every file of rows we write)."""
    if not lines:
        return b"[]\n"
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode("utf-8")


def load_rows(spec: TableSpec, data: bytes, source: str) -> ValidationReport:
    """Decode and validate a file of rows in one step."""
    return validate_rows(spec, decode_rows(data, source), source)
