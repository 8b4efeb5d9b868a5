"""After the decision: archive, leave quarantine, emit events, delete the source version.

Each step is safe to repeat: the archive is created only once (`If-None-Match: *`), events
carry deterministic ids, and the version delete names exactly the version (never a bare
delete, which would hide a newer upload behind a delete marker). Events go out before the
delete, so a version that is gone means its batch is finished, events included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.merge.observability import logger
from services.merge.once import create_once
from services.merge.outcome import Outcome
from shared.commitlog import (
    AREA_METADATA,
    BATCH_METADATA,
    OBSERVED_AT_ARCHIVE,
    SEQ_METADATA,
    Layout,
    MergeStatus,
)
from shared.events import (
    BaselinePromoted,
    EventDetail,
    EventSink,
    HistoryAppended,
    StagingArchived,
    StagingEmpty,
    StagingRejected,
    keys_listed,
)
from shared.layout import (
    Area,
    archive_key,
    latest_key,
    latest_manifest_key,
    quarantine_report_key,
)

if TYPE_CHECKING:
    from shared.storage import ObjectStore


MERGED = (MergeStatus.COMMITTED, MergeStatus.UNCHANGED)


class Finisher:
    def __init__(self, store: ObjectStore, publisher: EventSink, table: str) -> None:
        self.store = store
        self.publisher = publisher
        self.table = table

    def finish(self, outcome: Outcome) -> None:
        source = outcome.source
        if outcome.status in MERGED:
            if not outcome.fresh:
                self._drop_retired(outcome.retired)
            self._archive(outcome)
            if source.ref.read_from:
                self._leave_quarantine(source.ref.read_from)
        self.publisher.publish(events(outcome, self._latest_key(outcome)))
        if not source.ref.read_from:  # a quarantined copy's source version is long gone
            self.store.delete_version(source.key, source.ref.version_id)
            logger.info("deleted the source version", extra=_fields(outcome))

    def _drop_retired(self, keys: list[str]) -> None:
        """What the batch's entry retired, if a crash kept its copier from removing it (a
        fresh commit removed it while copying; checked first, so a repeat changes nothing)."""
        left = [key for key in keys if self.store.exists(key)]
        if left:
            self.store.delete_keys(left)

    def _archive(self, outcome: Outcome) -> None:
        source = outcome.source
        metadata = {
            BATCH_METADATA: source.batch,
            OBSERVED_AT_ARCHIVE: source.ref.observed,
            AREA_METADATA: source.area.value,
        }
        if outcome.seq is not None:
            metadata[SEQ_METADATA] = str(outcome.seq)
        key = archive_key(_table(outcome), source.ref.stamp, source.batch)
        if not create_once(self.store, key, source.data, metadata=metadata):
            return  # archived before
        logger.info("archived", extra={**_fields(outcome), "archive_key": key})

    def _leave_quarantine(self, copy_key: str) -> None:
        report = copy_key.removesuffix(".json") + ".report.json"
        for key in (copy_key, report):
            if self.store.exists(key):
                self.store.delete(key)
                logger.info("left quarantine", extra={"quarantine_key": key})

    def _latest_key(self, outcome: Outcome) -> str:
        """The key events name as latest: the manifest of a partitioned table, else the file
        (the layout the batch's entry, or the state it found unchanged, had)."""
        partitioned = outcome.layout is Layout.PARTITIONED
        return latest_manifest_key(self.table) if partitioned else latest_key(self.table)


def events(outcome: Outcome, latest_key: str) -> list[EventDetail]:
    source = outcome.source
    table = _table(outcome)
    common = {
        "table": table,
        "batch": source.batch,
        "source_key": source.key,
        "source_version": source.ref.version_id,
    }
    if outcome.status is MergeStatus.EMPTY:
        return [StagingEmpty.for_batch(**common)]
    if outcome.status is MergeStatus.QUARANTINED:
        record = outcome.quarantine
        assert record is not None  # a quarantined outcome has its record
        return [
            StagingRejected.for_batch(
                **common,
                quarantine_key=record.quarantine_key,
                report_key=quarantine_report_key(table, record.source.stamp, record.batch),
                problems=record.problems,
                reason=record.reason,
            )
        ]
    keys, truncated = keys_listed(outcome.keys_written)
    appended = HistoryAppended.for_batch(
        **common,
        latest_key=latest_key,
        history_key=outcome.history_key,
        keys_written=keys,
        keys_truncated=truncated,
        keys_deleted=keys_listed(outcome.keys_deleted)[0],
        counts=outcome.counts,
    )
    if source.area is Area.BASELINE:
        promoted = BaselinePromoted.for_batch(**common, latest_key=latest_key, rows=outcome.rows)
        # a baseline merged into an existing latest may have superseded rows
        return [promoted, appended] if outcome.history_key else [promoted]
    archived = StagingArchived.for_batch(
        **common, archive_key=archive_key(table, source.ref.stamp, source.batch), rows=outcome.rows
    )
    return [appended, archived]


def _table(outcome: Outcome) -> str:
    return outcome.source.key.split("/", 1)[1].removesuffix(".json")


def _fields(outcome: Outcome) -> dict[str, object]:
    return {"batch": outcome.source.batch, "key": outcome.source.key}
