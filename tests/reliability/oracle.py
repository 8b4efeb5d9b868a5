"""What the bucket should hold, computed from the staged versions alone, and how it compares.

Independent of services/merge on purpose: it never calls the merge's code. A row version is
its JSON object with sorted keys (the audit columns of history dropped); the expected latest
of a key is its version with the greatest `last_updated`, every other distinct version is
expected in history exactly once. The bucket is read with plain `json`, not the shared reader.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

AUDIT_COLUMNS = ("_superseded_at", "_batch")


def version_text(row: dict[str, Any]) -> str:
    """The identity of one row version: every column, canonical order."""
    return json.dumps(
        {k: v for k, v in row.items() if k not in AUDIT_COLUMNS}, sort_keys=True, default=str
    )


def parse_rows(data: bytes) -> list[dict[str, Any]]:
    rows = json.loads(data.decode("utf-8-sig"), parse_float=Decimal)
    assert isinstance(rows, list)
    return rows


@dataclass
class Expected:
    """The oracle of one table: expected latest (by key) and history (version texts)."""

    primary_key: str
    latest: dict[Any, str] = field(default_factory=dict)
    history: set[str] = field(default_factory=set)

    @property
    def versions(self) -> set[str]:
        return set(self.latest.values()) | self.history


def expect(primary_key: str, staged_files: list[bytes]) -> Expected:
    """Every distinct version staged (in any file, in any order): newest per key to latest."""
    by_key: dict[Any, dict[str, dict[str, Any]]] = {}
    for data in staged_files:
        for row in parse_rows(data):
            by_key.setdefault(row[primary_key], {})[version_text(row)] = row
    expected = Expected(primary_key)
    for key, versions in by_key.items():
        ranked = sorted(versions.items(), key=lambda item: str(item[1]["last_updated"]))
        newest_text = ranked[-1][0]
        expected.latest[key] = newest_text
        expected.history.update(text for text, _ in ranked[:-1])
    return expected


@dataclass
class Comparison:
    """How the bucket differs from the oracle, in rows."""

    lost: int = 0  # a staged distinct version in neither latest nor history
    duplicated: int = 0  # extra copies of a version across latest and history
    not_newest: int = 0  # keys whose latest row is not their newest version
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


def compare(expected: Expected, latest: list[dict[str, Any]], history: list[dict[str, Any]]):
    """Compare the rows read from latest and every history object with the oracle."""
    seen = Counter(version_text(row) for row in [*latest, *history])
    result = Comparison()
    wanted = expected.versions
    for text in wanted - set(seen):
        result.lost += 1
        result.details.append(f"lost: {text[:200]}")
    for text, count in seen.items():
        if count > 1:
            result.duplicated += count - 1
            result.details.append(f"{count} copies: {text[:200]}")
        if text not in wanted:
            result.unexpected += 1
            result.details.append(f"never staged: {text[:200]}")
    held = {row[expected.primary_key]: version_text(row) for row in latest}
    for key, text in expected.latest.items():
        if held.get(key) != text:
            result.not_newest += 1
            result.details.append(f"latest of {key} is not its newest version")
    return result


def read_table(
    s3: Any, bucket: str, table: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of latest and of every history object of a table, read with plain json."""
    try:
        latest = parse_rows(s3.get_object(Bucket=bucket, Key=f"latest/{table}.json")["Body"].read())
    except s3.exceptions.NoSuchKey:
        latest = []
    history: list[dict[str, Any]] = []
    for key in list_keys(s3, bucket, f"history/{table}/"):
        history += parse_rows(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return latest, history


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


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
