"""The per-table commit log: the on-bucket contract of the merge (docs/merge_protocol.md).

`_state/log/<table>/<seq>.json`, seq = 1, 2, ... with no gaps. Entry n is created only once
(`If-None-Match: *`), only by a merge that planned on the state after entry n-1; the entry is
the commit. latest (`latest/<t>.json` or the partition manifest) and the batch's history
object are copies made from entries, so they may lag the log by the entries whose merge has
not finished; `SEQ_METADATA` on latest says which entry it reflects. The merge, `ops/` and
`shared/reader.py` read these models; nothing else defines them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from shared.events import MergeCounts
from shared.layout import Area, state_key
from shared.partitions import PartitionManifest

if TYPE_CHECKING:
    from shared.storage import ObjectStore

# User metadata on latest (and on an archive object): the log entry it reflects, its batch.
SEQ_METADATA = "merge-seq"
BATCH_METADATA = "merge-batch"
# On an archived file: the batch's observation (a replay of it is the same observation) and
# the area it came from (a replay goes back there).
OBSERVED_AT_ARCHIVE = "merge-observed"
AREA_METADATA = "merge-area"
# On a file `ingestctl replay` stages: the archive it came from (the batch it repeats).
REPLAY_OF_METADATA = "replay-of"
SEQ_DIGITS = 12


def log_prefix(table: str) -> str:
    return state_key("log", table) + "/"


def entry_key(table: str, seq: int) -> str:
    return f"{log_prefix(table)}{seq:0{SEQ_DIGITS}d}.json"


def entry_seq(key: str) -> int:
    return int(key.rsplit("/", 1)[1].removesuffix(".json"))


class Layout(StrEnum):
    SINGLE = "single"  # latest/<t>.json
    PARTITIONED = "partitioned"  # latest/<t>/_manifest.json and its partitions


class SourceRef(BaseModel):
    """The object version a batch was read from, and when it was observed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    area: Area
    key: str  # staging/<t>.json or baseline/<t>.json (what the notification named)
    version_id: str
    stamp: str  # from the object's own time: names the archive and history keys
    last_modified: datetime
    observed: str  # Observation.text
    read_from: str | None = None  # a quarantined copy the batch was re-validated from


# Entries this code writes: 2 added `removed` and `keys_deleted` (deletes); entries of
# version 1 (no `schema_version` field) read with those empty.
ENTRY_SCHEMA_VERSION = 2


class LogEntry(BaseModel):
    """One committed batch: what it made current in latest and the history it superseded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    seq: int
    table: str
    batch: str
    source: SourceRef
    layout: Layout
    # SINGLE: the rows this entry writes into latest, by key (canonical text with `_observed`)
    upserts: dict[int, str] = {}
    # SINGLE: the keys this entry deletes from latest, each with the tombstone line latest
    # keeps for it instead of its row (shared/versions.py; readers skip it)
    removed: dict[int, str] = {}
    # PARTITIONED: latest after this entry (its partitions were written before the commit)
    manifest: PartitionManifest | None = None
    # latest objects no longer current after this entry (replaced partitions; the single
    # file of a table that became partitioned): removed from view once latest is copied
    replaced: list[str] = []
    # the history rows (canonical text with audit columns) and the object they are copied to
    history: list[str] = []
    history_key: str | None = None
    rows: int
    counts: MergeCounts
    keys_written: list[int]
    keys_deleted: list[int] = []  # the keys whose row left latest (a delete)
    committed_at: datetime


def read_entry(store: ObjectStore, table: str, seq: int) -> LogEntry | None:
    """Entry `seq` of the table's log; None when no batch committed there (yet)."""
    found = store.get_if_exists(entry_key(table, seq))
    return None if found is None else LogEntry.model_validate_json(found.data)


def entries_after(
    store: ObjectStore, table: str, seq: int, upto: int | None = None
) -> list[LogEntry]:
    """Entries seq+1, seq+2, ... through `upto` (None: until one is missing)."""
    found: list[LogEntry] = []
    while upto is None or seq < upto:
        entry = read_entry(store, table, seq + 1)
        if entry is None:
            break
        found.append(entry)
        seq += 1
    return found


class MergeStatus(StrEnum):
    COMMITTED = "committed"
    UNCHANGED = "unchanged"  # merged, nothing to commit (every row already there)
    EMPTY = "empty"
    QUARANTINED = "quarantined"
