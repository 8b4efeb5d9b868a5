"""latest's rows as canonical text: find, parse and replace only the rows a batch touches.

latest (or one partition of it) is written only by the merge, in the canonical form of
`shared.rows.dump_rows`: `[`, one row per line sorted by key with the primary key first, `]`.
JSON strings escape newlines, so `\\n{` occurs only where a row starts. The merge therefore
never splits, parses or validates the rows a batch does not touch: it finds a key by bisecting
byte offsets (reading just the digits after `{"<pk>":`), parses the few rows it needs, and
writes the new file as one join of the untouched byte runs and the new rows' texts. Untouched
rows are carried over byte for byte; they were validated when they entered latest. Each row
ends with its audit columns, `_observed` last (shared/versions.py); a deleted key's line is
its tombstone (`held` gives it as a `Tombstone`; `rows` counts live rows only). A file not in
that layout (hand-written, older tooling) takes the slow path: every row is decoded and
validated, then written canonically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from shared.changes import DELETED_AT_COLUMN, Change
from shared.rows import FileFormatError
from shared.tables import TableSpec
from shared.versions import (
    Tombstone,
    Version,
    is_tombstone,
    load_latest,
    observed_of,
    tombstone_json,
    tombstone_of,
    validate_stripped,
    version_json,
)

_OPEN, _SEP, _CLOSE, _EMPTY, _ROW_START = b"[\n", b",\n", b"\n]\n", b"[]\n", b"\n{"
# only a tombstone line has this column (JSON escapes a quote inside a string value)
_TOMBSTONE = b',"' + DELETED_AT_COLUMN.encode() + b'":'


@dataclass
class RowsFile:
    """One canonical file of rows, sorted by key, kept as its bytes."""

    spec: TableSpec
    source: str
    data: bytes = _EMPTY
    _skip: int = field(init=False)

    def __post_init__(self) -> None:
        self._skip = len(_key_prefix(self.spec))

    @classmethod
    def empty(cls, spec: TableSpec, source: str) -> RowsFile:
        return cls(spec, source)

    @classmethod
    def parse(cls, spec: TableSpec, data: bytes, source: str) -> RowsFile:
        if not _is_canonical(spec, data):  # not our layout: validate every row
            # ours: a bad latest is a bug to stop at, never to overwrite (raises)
            versions, tombstones = load_latest(spec, data, source)
            lines = [(_key(spec, v), version_json(spec, v)) for v in versions]
            lines += [(t.key, tombstone_json(spec, t)) for t in tombstones]
            data = RowsFile.empty(spec, source).replaced(dict(lines)).data
        return cls(spec, source, data)

    # ---- positions: a row starts at an offset just after "\n" ---------------------------

    @property
    def _first(self) -> int:
        return len(_OPEN)

    @property
    def _end(self) -> int:
        """Where the rows end (the closing "\\n]\\n"); also "after the last row"."""
        return len(self.data) - len(_CLOSE) if self.data != _EMPTY else len(_OPEN)

    def _next_start(self, offset: int) -> int:
        """The start of the first row at or after `offset`, or `_end`."""
        if offset <= self._first:
            return self._first if self.data != _EMPTY else self._end
        found = self.data.find(_ROW_START, offset - 1, self._end)
        return self._end if found < 0 else found + 1

    def _key_at(self, start: int) -> int:
        data = self.data
        digits = start + self._skip
        try:
            return int(data[digits : data.index(b",", digits)])
        except ValueError:
            raise FileFormatError(self.source, f"no integer key at byte {start}") from None

    def _text_at(self, start: int) -> bytes:
        end = self.data.find(b"\n", start)
        text = self.data[start:end]
        return text[:-1] if text.endswith(b",") else text

    def find(self, key: int) -> tuple[int, bool]:
        """The offset of the first row whose key is >= `key`, and whether it is `key`."""
        low, high = self._first, self._end
        while low < high:
            start = self._next_start((low + high) // 2)
            if start >= high:
                high = (low + high) // 2
                continue
            if self._key_at(start) < key:
                low = self._next_start(start + 1)
            else:
                high = start
        return low, low < self._end and self._key_at(low) == key

    # ---- reading and replacing rows -----------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes of the file as stored (what a merge of it reads and writes)."""
        return len(self.data)

    @property
    def is_empty(self) -> bool:
        """No line at all (not even a tombstone)."""
        return self.data == _EMPTY

    @property
    def rows(self) -> int:
        """Live rows (tombstone lines are not rows)."""
        return self.data.count(_ROW_START) - self.data.count(_TOMBSTONE)

    def first_and_last_keys(self) -> tuple[int, int] | None:
        if self.data == _EMPTY:
            return None
        last = self.data.rfind(_ROW_START, 0, self._end) + 1
        return self._key_at(self._first), self._key_at(last)

    def held(self, keys: Iterable[int]) -> dict[int, Version | Tombstone]:
        """The versions (or tombstones) of `keys` that the file holds, parsed and validated
        (only these)."""
        found: dict[int, Version | Tombstone] = {}
        for key in keys:
            start, present = self.find(key)
            if present:
                found[key] = self._parse_line(json.loads(self._text_at(start), parse_float=Decimal))
        return found

    def _parse_line(self, raw: object) -> Version | Tombstone:
        if is_tombstone(raw):
            assert isinstance(raw, dict)
            return tombstone_of(self.spec, raw, self.source)
        report, audits = validate_stripped(self.spec, [raw], self.source)
        if report.problems:
            raise FileFormatError(self.source, f"latest row invalid: {report.problems[0]}")
        return Version(report.rows[0], observed_of(audits[0]), Change.of_audit(audits[0]))

    def replaced(self, new_rows: Mapping[int, str]) -> RowsFile:
        """A copy with the rows of `new_rows`' keys replaced or inserted (in key order), each
        given as its canonical text (`version_json`)."""
        pieces: list[bytes | memoryview] = []
        view = memoryview(self.data)
        current = self._first
        for key in sorted(new_rows):
            start, present = self.find(key)
            if start > current:
                pieces.append(self._run(view, current, start))
            pieces.append(new_rows[key].encode("utf-8"))
            current = self._next_start(start + 1) if present else start
        if current < self._end:
            pieces.append(self._run(view, current, self._end))
        return self._joined(pieces)

    def slice(self, low: int, high: int) -> RowsFile:
        """The rows with keys in `low..high`."""
        start, _ = self.find(low)
        end, _ = self.find(high + 1)
        if start >= end:
            return RowsFile.empty(self.spec, self.source)
        return self._joined([self._run(memoryview(self.data), start, end)])

    def _run(self, view: memoryview, start: int, end: int) -> memoryview:
        """Consecutive whole rows from `start` up to the row starting at `end` (no separator
        after the last)."""
        return view[start : end - len(_SEP) if end < self._end else end]

    def _joined(self, pieces: list[bytes | memoryview]) -> RowsFile:
        if not pieces:
            return RowsFile.empty(self.spec, self.source)
        parts: list[bytes | memoryview] = [_OPEN]
        for piece in pieces:
            parts += (piece, _SEP)
        parts[-1] = _CLOSE
        return RowsFile(self.spec, self.source, b"".join(parts))

    def dump(self) -> bytes:
        return self.data


def _key(spec: TableSpec, version: Version) -> int:
    key: int = getattr(version.row, spec.primary_key)
    return key


def _key_prefix(spec: TableSpec) -> bytes:
    return b'{"' + spec.primary_key.encode() + b'":'


def _is_canonical(spec: TableSpec, data: bytes) -> bool:
    return data == _EMPTY or (
        data.startswith(_OPEN + _key_prefix(spec)) and data.endswith(b"}" + _CLOSE)
    )
