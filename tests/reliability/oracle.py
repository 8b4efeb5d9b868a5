"""What the bucket should hold, computed from the staged files alone, and how it compares.

Independent of services/merge on purpose: it never calls the merge's code, it restates the
rules (README, "The merge"). Versions are ordered by observation, not by `last_updated`:

- a file is one observation (for a hand upload its notification's `eventTime`, then the
  per-key `sequencer` as an integer; for a file the ingest wrote, its `observed-at`
  metadata); files are given to `expect` in that order, which is not the order they were
  delivered in;
- inside one file the versions of a key are ordered by `last_updated`, then file order (a
  version repeated in a file counts where it last appears); the last is the file's version;
- latest holds, per key, the version of the latest observation; the row it replaced goes to
  history each time (a row that went back to an earlier content is in history again); a
  file's older versions go to history unless history holds that text or it is latest's row.

Applying the files in observation order gives the most copies of each version the bucket may
hold (latest and history together). Delivered in another order the merge may keep fewer
(a delayed file adds only versions history lacks), never more, and never none: so a version
staged but held nowhere is lost, a copy beyond that count is duplicated, and latest must be
exactly the version of the latest observation. The bucket is read through shared/reader.py,
which strips the audit columns (`_observed`, `_superseded_at`, `_batch`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.reader import iter_history, read_latest
from shared.rows import load_rows, row_json
from shared.schemas import RowModel
from shared.storage import BucketStore
from shared.tables import TABLES, TableSpec

# A point in observation order: the time, then S3's per-key sequencer (-1: none).
Observed = tuple[datetime, int]


def observed_of_notification(body: str) -> Observed:
    """A hand upload's observation: its notification's `eventTime`, then `sequencer`."""
    (record,) = json.loads(body)["Records"]
    at = _utc(record["eventTime"])
    sequencer = record["s3"]["object"].get("sequencer")
    assert sequencer, "a notification without a sequencer: is moto patched (moto_edge)?"
    return at, int(sequencer, 16)


def observed_of_metadata(text: str) -> Observed:
    """A file the ingest wrote: its `observed-at` metadata (`<iso time>Z[#<hex sequencer>]`)."""
    stamp, _, sequencer = text.partition("#")
    return _utc(stamp), int(sequencer, 16) if sequencer else -1


def _utc(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def file_versions(spec: TableSpec, data: bytes) -> dict[int, list[str]]:
    """A file's distinct versions of each key (canonical text), in the file's order: by
    `last_updated`, then where the version last appears; the last is the file's version."""
    report = load_rows(spec, data, "staged file")
    assert not report.problems, report.problems[:3]
    placed: dict[int, dict[str, tuple[datetime, int]]] = {}
    for position, row in enumerate(report.rows):
        placed.setdefault(_key(spec, row), {})[row_json(spec, row)] = (row.last_updated, position)
    return {
        key: sorted(versions, key=lambda text: versions[text]) for key, versions in placed.items()
    }


def _key(spec: TableSpec, row: RowModel) -> int:
    key: int = getattr(row, spec.primary_key)
    return key


@dataclass
class Expected:
    """The oracle of one table: latest by key, and the most copies of each version (latest and
    history together) the bucket may hold."""

    spec: TableSpec
    latest: dict[int, str] = field(default_factory=dict)
    copies: Counter[str] = field(default_factory=Counter)


def expect(spec: TableSpec, files_in_observation_order: Iterable[bytes]) -> Expected:
    """Apply the rules to the staged files, earliest observation first (quarantined files
    excluded: they never reach latest or history)."""
    latest: dict[int, str] = {}
    history: Counter[str] = Counter()
    for data in files_in_observation_order:
        for key, versions in file_versions(spec, data).items():
            *older, top = versions
            held = latest.get(key)
            if held is not None and held != top:
                history[held] += 1  # the row latest replaces, every time
            latest[key] = top  # each file is observed after the ones before it
            for text in older:
                if text != top and not history[text]:
                    history[text] += 1
    expected = Expected(spec, latest)
    expected.copies = history + Counter(latest.values())
    return expected


@dataclass
class Comparison:
    """How the bucket differs from the oracle, in rows."""

    lost: int = 0  # a staged version in neither latest nor history
    duplicated: int = 0  # copies beyond what the observation order accounts for
    not_newest: int = 0  # keys whose latest row is not the version of the latest observation
    unexpected: int = 0  # versions in the bucket that were never staged
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.not_newest or self.unexpected)

    def add(self, other: Comparison) -> None:
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.not_newest += other.not_newest
        self.unexpected += other.unexpected
        self.details += other.details


def compare(expected: Expected, latest: Sequence[RowModel], history: Sequence[RowModel]):
    """Compare the rows read from latest and from every history object with the oracle."""
    spec = expected.spec
    held = [row_json(spec, row) for row in latest]
    seen = Counter(held) + Counter(row_json(spec, row) for row in history)
    result = Comparison()
    for text, most in sorted(expected.copies.items()):
        if not seen[text]:
            result.lost += 1
            result.details.append(f"lost: {short(text)}")
        elif seen[text] > most:
            result.duplicated += seen[text] - most
            result.details.append(f"{seen[text]} copies (at most {most}): {short(text)}")
    for text in sorted(set(seen) - set(expected.copies)):
        result.unexpected += 1
        result.details.append(f"never staged: {short(text)}")
    by_key = {_key(spec, row): text for row, text in zip(latest, held, strict=True)}
    for key, text in sorted(expected.latest.items()):
        if by_key.get(key) != text:
            result.not_newest += 1
            found = by_key.get(key)
            result.details.append(
                f"latest of {key} is {short(found) if found else 'missing'}, "
                f"not the latest observation's {short(text)}"
            )
    return result


def short(text: str) -> str:
    """A version's text for a report: its key, `last_updated` and the columns that vary."""
    row: dict[str, Any] = json.loads(text)
    key_column = next(iter(row))  # the canonical form starts with the primary key
    shown = {key_column: row[key_column], "last_updated": row.get("last_updated")}
    shown |= {k: v[-24:] for k, v in row.items() if isinstance(v, str) and " v" in v}
    return json.dumps(shown)


def read_table(s3: Any, bucket: str, table: str) -> tuple[list[RowModel], list[RowModel]]:
    """The rows of latest (either layout) and of every history object, through the reader."""
    store, spec = BucketStore(bucket, s3), TABLES[table]
    history = [item.row for _, items in iter_history(store, spec) for item in items]
    return read_latest(store, spec).rows, history


def object_versions(s3: Any, bucket: str, prefix: str = "") -> dict[str, list[tuple[str, ...]]]:
    """Every version and delete marker of every key: what a replay must leave as it was."""
    listing: dict[str, list[tuple[str, ...]]] = {}
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for v in page.get("Versions", []):
            listing.setdefault(v["Key"], []).append((v["VersionId"], v["ETag"], str(v["Size"])))
        for m in page.get("DeleteMarkers", []):
            listing.setdefault(m["Key"], []).append((m["VersionId"], "delete-marker"))
    return {key: sorted(versions) for key, versions in listing.items()}


def changed_keys(before: dict[str, list[tuple[str, ...]]], after: dict[str, list[tuple[str, ...]]]):
    """Keys whose version listing differs (new, gone, or another version/ETag)."""
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
