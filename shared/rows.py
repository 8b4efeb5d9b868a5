"""Reading, validating and writing table rows: one canonical JSON form per row.

The merge compares rows by content, so the same row must always give the same bytes: columns
in a fixed order, timestamps with six fraction digits, money as an exact JSON number with no
trailing zeros. JSON is read with `Decimal` for every non-integer number so that money never
passes through a binary float.

Files come from outside, so every input is hostile until validated: whatever `decode_rows`
cannot read is a `FileFormatError` naming the file, and everything else that is wrong (a
duplicated column, an integer literal too long to read, a number out of range, text that is not
writable as UTF-8) is a `RowProblem` of its row, never an exception. What `validate_rows`
accepts, `row_json` writes as is: the checks are in validation, the writer stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from shared.schemas import RowModel
from shared.tables import TableSpec
from shared.types import INT64_MAX, INT64_MIN, format_money, format_timestamp

_MAX_VALUE_TEXT = 80

# The key under which `decode_rows` leaves the columns an object gave more than once, with every
# value given, for `validate_rows` to report (json keeps only the last). Not a column name a
# schema can have, and not an audit (underscore) column, so it stays with the row's columns.
DUPLICATES = "\x00duplicated columns"


def _readable(text: str) -> str:
    """Text that can be printed and written as UTF-8, whatever a file put into it."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_Readable = Annotated[str, AfterValidator(_readable)]


class FileFormatError(ValueError):
    """A file that is not a JSON array of rows (or JSON Lines, where allowed)."""

    def __init__(self, source: str, reason: str) -> None:
        source, reason = _readable(source), _readable(reason)
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class RowProblem(BaseModel):
    """One thing wrong with one row: where it is and what is wrong."""

    model_config = ConfigDict(defer_build=True)

    table: _Readable
    source: _Readable
    row_index: int
    primary_key: int | None
    field: _Readable | None
    message: _Readable
    value: _Readable | None

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


class UnreadableNumber:
    """A JSON number that Python cannot read, kept as its text for the row's report: an integer
    of more digits than `int()` converts (4,300), or an exponent beyond what `Decimal` holds
    (1e9999999999999999999). No column accepts one."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        if len(self.text) <= 24:
            return self.text
        return f"{self.text[:12]}...{self.text[-6:]} ({len(self.text)} characters)"


def _integer(text: str) -> int | UnreadableNumber:
    try:
        return int(text)
    except ValueError:
        return UnreadableNumber(text)


def _decimal(text: str) -> Decimal | UnreadableNumber:
    try:
        return Decimal(text)
    except ArithmeticError:  # decimal.InvalidOperation: the exponent overflows
        return UnreadableNumber(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a column given twice is recorded under `DUPLICATES`."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        given: dict[str, list[Any]] = {}
        for name, value in pairs:
            given.setdefault(name, []).append(value)
        obj[DUPLICATES] = {name: values for name, values in given.items() if len(values) > 1}
    return obj


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal, object_pairs_hook=_object)
    except json.JSONDecodeError:
        raise
    except (ValueError, ArithmeticError):
        # A number Python cannot read (int's digit limit, Decimal's exponent limit): read the
        # text again, slower, keeping such numbers as text so their rows can be reported.
        return json.loads(text, parse_float=_decimal, parse_int=_integer, object_pairs_hook=_object)


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
        parsed = _loads(stripped)
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
            rows.append(_loads(line))
        except json.JSONDecodeError as exc:
            raise FileFormatError(source, f"line {number} is not valid JSON: {exc.msg}") from None
        except RecursionError:
            raise FileFormatError(
                source, f"line {number} is not valid JSON: nested too deeply"
            ) from None
    return rows


_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def _kind(value: Any) -> str:
    return "null" if value is None else _KINDS.get(type(value), "a number")


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4,300 digits (given by a caller, not by JSON)
        return f"an integer of {value.bit_length()} bits"
    if len(text) > _MAX_VALUE_TEXT:
        return f"{text[:_MAX_VALUE_TEXT]}... ({len(text)} chars)"
    return text


def validate_rows(spec: TableSpec, raw_rows: Sequence[Any], source: str) -> ValidationReport:
    """Validate every row; collect every problem rather than stopping at the first."""
    valid: list[RowModel] = []
    problems: list[RowProblem] = []
    for index, raw in enumerate(raw_rows):
        row, found = validate_row(spec, raw, source, index)
        if found:
            problems += found
        elif row is not None:
            valid.append(row)
    return ValidationReport(
        table=spec.name, source=source, rows_read=len(raw_rows), rows=valid, problems=problems
    )


def validate_row(
    spec: TableSpec, raw: Any, source: str, index: int, *, absent: Collection[str] = ()
) -> tuple[RowModel | None, list[RowProblem]]:
    """One row: its model, or its problems. `absent`: columns the row may leave out (to be
    filled later, e.g. unchanged TOAST values); a row missing only those has neither."""
    if not isinstance(raw, dict):
        message = f"row must be a JSON object, got {_kind(raw)}"
        return None, [_problem(spec, source, index, None, None, message, _short(raw))]
    duplicated = raw.get(DUPLICATES)
    if duplicated is not None:
        raw = {name: value for name, value in raw.items() if name != DUPLICATES}
    known_key = _known_key(raw.get(spec.primary_key), duplicated, spec.primary_key)
    found = [
        _problem(spec, source, index, known_key, name, message, value)
        for name, message, value in _duplicate_problems(duplicated)
    ]
    try:
        row = spec.row_model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            e
            for e in exc.errors(include_url=False)
            if not (e["type"] == "missing" and ".".join(map(str, e["loc"])) in absent)
        ]
        found += [_problem(spec, source, index, known_key, *_describe(e)) for e in errors]
        return None, found
    return (None if found else row), found


def _known_key(key: Any, duplicated: Any, name: str) -> int | None:
    """The row's primary key where it is one (an int in range, given once)."""
    if type(key) is not int or not INT64_MIN <= key <= INT64_MAX:
        return None
    return None if isinstance(duplicated, dict) and name in duplicated else key


def _duplicate_problems(duplicated: Any) -> list[tuple[str | None, str, str | None]]:
    if duplicated is None:
        return []
    if not isinstance(duplicated, dict):  # the marker key given by a file, not by decode_rows
        return [(_short(DUPLICATES), "unknown column (not in the table's schema)", None)]
    message = "column given more than once in the row (JSON keeps only one of the values)"
    return [(str(name), message, _short(values)) for name, values in duplicated.items()]


_MESSAGES = {
    "extra_forbidden": "unknown column (not in the table's schema)",
    "missing": "required column is missing",
}
_OUT_OF_RANGE = f"integer out of range (the warehouse's is {INT64_MIN}..{INT64_MAX})"


def _describe(error: Any) -> tuple[str | None, str, str | None]:
    """A Pydantic error as (field, message, value)."""
    field = ".".join(str(part) for part in error["loc"]) or None
    message = _MESSAGES.get(error["type"], error["msg"])
    if error["type"] == "string_unicode" and field is None:  # a column name, checked by Pydantic
        field, message = str(error["input"]), "column name is not valid Unicode (not UTF-8)"
    if error.get("ctx") in ({"ge": INT64_MIN}, {"le": INT64_MAX}):  # shared.types.Int64
        message = _OUT_OF_RANGE
    if isinstance(error.get("input"), UnreadableNumber):
        message = "number out of range (too many digits or too large an exponent to read)"
    value = None if error["type"] == "missing" else _short(error["input"])
    return field, message, value


def _problem(
    spec: TableSpec,
    source: str,
    index: int,
    key: int | None,
    field: str | None,
    message: str,
    value: str | None,
) -> RowProblem:
    return RowProblem(
        table=spec.name,
        source=source,
        row_index=index,
        primary_key=key,
        field=field,
        message=message,
        value=value,
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
