"""latest's rows as canonical text: find, parse and replace only the rows a batch touches.

latest (or one partition of it) is written only by the merge, in the canonical form of
`shared.rows.dump_rows`: `[`, one row per line sorted by key with the primary key first, `]`.
So the merge never needs to parse or validate the rows a batch does not touch: it splits the
bytes into row texts, finds a key by bisection (reading just the digits after `{"<pk>":`),
parses the few rows it needs into models, and splices the new texts in. Untouched rows are
carried over byte for byte; they were validated when they entered latest. A file not in that
layout (hand-written, older tooling) takes the slow path: decode and validate every row.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from shared.rows import FileFormatError, dump_rows, load_rows, row_json, validate_rows
from shared.schemas import RowModel
from shared.tables import TableSpec

_OPEN, _SEP, _CLOSE, _EMPTY = b"[\n", b",\n", b"\n]\n", b"[]\n"


@dataclass
class RowsFile:
    """The row texts of one canonical file (no separators), sorted by key."""

    spec: TableSpec
    source: str
    rows: list[bytes]

    @classmethod
    def empty(cls, spec: TableSpec, source: str) -> RowsFile:
        return cls(spec, source, [])

    @classmethod
    def parse(cls, spec: TableSpec, data: bytes, source: str) -> RowsFile:
        rows = _split_canonical(spec, data)
        if rows is None:  # not our layout: validate every row, then use the canonical form
            report = load_rows(spec, data, source)
            if report.problems:  # ours: a bad latest is a bug to stop at, never to overwrite
                raise FileFormatError(source, f"latest has invalid rows: {report.problems[0]}")
            ordered = sorted(report.rows, key=lambda r: int(getattr(r, spec.primary_key)))
            rows = _split_canonical(spec, dump_rows(spec, ordered)) or []
        return cls(spec, source, rows)

    def key_of(self, text: bytes) -> int:
        prefix = _key_prefix(self.spec)
        if not text.startswith(prefix):
            raise FileFormatError(self.source, f"row does not start with {prefix.decode()}")
        end = text.find(b",", len(prefix))
        try:
            return int(text[len(prefix) : end])
        except ValueError:
            raise FileFormatError(self.source, "row key is not an integer") from None

    def row_keys(self) -> list[int]:
        return [self.key_of(text) for text in self.rows]

    def find(self, key: int) -> tuple[int, bool]:
        """Where `key` is (or would be inserted), and whether it is there."""
        at = bisect_left(self.rows, key, key=self.key_of)
        return at, at < len(self.rows) and self.key_of(self.rows[at]) == key

    def held(self, keys: Iterable[int]) -> dict[int, RowModel]:
        """The rows of `keys` that the file holds, parsed and validated (only these)."""
        found = {}
        for key in keys:
            at, present = self.find(key)
            if present:
                report = validate_rows(
                    self.spec, [json.loads(self.rows[at], parse_float=Decimal)], self.source
                )
                if report.problems:
                    raise FileFormatError(self.source, f"latest row invalid: {report.problems[0]}")
                found[key] = report.rows[0]
        return found

    def replaced(self, new_rows: Mapping[int, RowModel]) -> RowsFile:
        """A copy with the rows of `new_rows`' keys replaced or inserted (in key order)."""
        spliced: list[bytes] = []
        start = 0
        for key in sorted(new_rows):
            at, present = self.find(key)
            spliced.extend(self.rows[start:at])
            spliced.append(row_json(self.spec, new_rows[key]).encode("utf-8"))
            start = at + 1 if present else at
        spliced.extend(self.rows[start:])
        return RowsFile(self.spec, self.source, spliced)

    def slice(self, low: int, high: int) -> RowsFile:
        """The rows with keys in `low..high`."""
        start = bisect_left(self.rows, low, key=self.key_of)
        end = bisect_left(self.rows, high + 1, key=self.key_of)
        return RowsFile(self.spec, self.source, self.rows[start:end])

    def dump(self) -> bytes:
        if not self.rows:
            return _EMPTY
        return _OPEN + _SEP.join(self.rows) + _CLOSE


def _key_prefix(spec: TableSpec) -> bytes:
    return b'{"' + spec.primary_key.encode() + b'":'


def _split_canonical(spec: TableSpec, data: bytes) -> list[bytes] | None:
    """The row texts, or None when the bytes are not in the canonical layout."""
    if data == _EMPTY:
        return []
    if not (data.startswith(_OPEN + _key_prefix(spec)) and data.endswith(b"}" + _CLOSE)):
        return None
    # JSON strings escape newlines, so ",\n" only ever separates rows
    return data[len(_OPEN) : -len(_CLOSE)].split(_SEP)
