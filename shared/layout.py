"""The bucket layout (README, "Architecture"): every key the pipeline reads or writes is named
here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.tables import TABLES, TableSpec, UnknownTableError


class Area(StrEnum):
    BASELINE = "baseline"
    STAGING = "staging"
    LATEST = "latest"
    HISTORY = "history"
    ARCHIVE = "archive"
    QUARANTINE = "quarantine"
    STATE = "_state"
    WAREHOUSE = "warehouse"


# The two areas whose uploads trigger a merge (S3 notifications filter on these whole keys).
TRIGGER_AREAS = (Area.STAGING, Area.BASELINE)


class InvalidKeyError(ValueError):
    """A key that is not `staging/<table>.json` or `baseline/<table>.json` of a known table."""


def staging_key(table: str) -> str:
    return f"{Area.STAGING}/{table}.json"


def baseline_key(table: str) -> str:
    return f"{Area.BASELINE}/{table}.json"


def latest_key(table: str) -> str:
    return f"{Area.LATEST}/{table}.json"


def history_prefix(table: str) -> str:
    return f"{Area.HISTORY}/{table}/"


def history_key(table: str, stamp: str, batch: str) -> str:
    return f"{history_prefix(table)}{stamp}_{batch}.json"


def archive_prefix(table: str) -> str:
    return f"{Area.ARCHIVE}/{table}/"


def archive_key(table: str, stamp: str, batch: str) -> str:
    return f"{archive_prefix(table)}{table}_{stamp}_{batch}.json"


def quarantine_prefix(table: str) -> str:
    return f"{Area.QUARANTINE}/{table}/"


def quarantine_key(table: str, stamp: str, batch: str) -> str:
    return f"{quarantine_prefix(table)}{table}_{stamp}_{batch}.json"


def quarantine_report_key(table: str, stamp: str, batch: str) -> str:
    return f"{quarantine_prefix(table)}{table}_{stamp}_{batch}.report.json"


def batch_of_key(key: str) -> str:
    """The batch a history, archive or quarantine object's key names (its last `_` part)."""
    return key.removesuffix(".json").rsplit("_", 1)[-1]


def state_key(*parts: str) -> str:
    return "/".join((Area.STATE, *parts))


# The pause record: the pause function writes it, the ingest reads it before every table.
PAUSE_RECORD_KEY = state_key("pause.json")


def warehouse_prefix(table: str) -> str:
    """The folder of one warehouse table (its Athena/Glue table location)."""
    return f"{Area.WAREHOUSE}/{table}/"


# The Hive partition column of a fact's files (`created_month=2022-11/`).
WAREHOUSE_PARTITION_COLUMN = "created_month"


def warehouse_file_key(table: str, partition: str | None = None) -> str:
    """A warehouse table's Parquet file: one per `created_month=YYYY-MM` partition of a fact,
    one file for a dimension."""
    folder = warehouse_prefix(table)
    if partition:
        folder += f"{WAREHOUSE_PARTITION_COLUMN}={partition}/"
    return f"{folder}part-0.parquet"


def changes_prefix(source_table: str) -> str:
    """The folder of a source table's change table (services/transform/changes.py)."""
    return f"{Area.WAREHOUSE}/changes/{source_table}/"


def changes_file_key(source_table: str, first_key: int) -> str:
    """One file of a change table: the versions of the keys from `first_key` on (a block of
    `KEYS_PER_FILE` keys: services/transform/changes.py)."""
    return f"{changes_prefix(source_table)}part-{first_key:020d}.parquet"


def manifest_key_in(prefix: str) -> str:
    """The current files and row counts of the warehouse table in `prefix` (a leading `_`:
    Athena skips it)."""
    return f"{prefix}_manifest.json"


def warehouse_manifest_key(table: str) -> str:
    return manifest_key_in(warehouse_prefix(table))


def object_stamp(last_modified: datetime) -> str:
    """The `<stamp>` of archive/history keys, from the staging object's own time (not the clock)."""
    return last_modified.strftime("%Y%m%dT%H%M%S%fZ")


def batch_id(version_id: str | None, etag: str | None) -> str:
    """A short deterministic id of one staging object version: from its versionId, else ETag."""
    identity = version_id or (etag or "").strip('"')
    if not identity:
        raise ValueError("a batch needs a versionId or an ETag")
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TriggerKey:
    """A parsed upload key that starts a merge: its area and its table."""

    area: Area
    table: TableSpec


def parse_trigger_key(key: str) -> TriggerKey:
    """`staging/<table>.json` or `baseline/<table>.json` of a registered table, or an error."""
    area_text, sep, name = key.partition("/")
    if not sep or area_text not in {a.value for a in TRIGGER_AREAS}:
        raise InvalidKeyError(f"key {key!r} is not under staging/ or baseline/")
    if not name.endswith(".json") or "/" in name:
        raise InvalidKeyError(f"key {key!r} is not {area_text}/<table>.json")
    table = name.removesuffix(".json")
    if table not in TABLES:
        raise InvalidKeyError(str(UnknownTableError(table)) + f" (key {key!r})")
    return TriggerKey(Area(area_text), TABLES[table])


# ---- key-range partitions of latest (tables with `rows_per_partition`) ----------------------


def latest_partition_prefix(table: str) -> str:
    """Where a partitioned table's latest lives: `latest/<table>/` (note the slash: never a
    prefix of another table's keys)."""
    return f"{Area.LATEST}/{table}/"


def latest_manifest_key(table: str) -> str:
    """The small object listing a partitioned table's current partitions: its commit point."""
    return f"{latest_partition_prefix(table)}_manifest.json"


def latest_partition_key(table: str, low: int, high: int, batch: str, digest: str) -> str:
    """One immutable partition object: its key range, the batch that wrote it and a digest of
    its bytes (so one name never holds two contents, whichever attempt wrote it)."""
    return f"{latest_partition_prefix(table)}{low:012d}-{high:012d}_{batch}_{digest}.json.gz"
