"""Applies one object version (a staging or baseline file of one table): the ordered steps.

Steps, each safe to repeat: write the batch manifest (the plan), write history, replace latest
with a conditional write that records the batch in latest's metadata (the commit point), mark
the manifest committed, archive the staging bytes, delete exactly that staging version, emit
events. A redelivered message reads the manifest and finds the commit (in the manifest, or in
a version of latest written since the staging object was) and only finishes what is left.
Everything is named from the batch id and the staging object's own stamp, never the clock.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict

from services.merge.logic import MergeResult, keys_needing_history, merge, primary_key
from services.merge.observability import logger, metrics
from services.merge.rowsfile import RowsFile
from services.merge.settings import MergeSettings
from shared.events import (
    BaselinePromoted,
    EventDetail,
    EventPublisher,
    HistoryAppended,
    MergeCounts,
    StagingArchived,
    StagingEmpty,
    StagingRejected,
    keys_listed,
)
from shared.history import dump_history, load_history
from shared.layout import (
    Area,
    archive_key,
    batch_id,
    history_key,
    history_prefix,
    latest_key,
    latest_manifest_key,
    latest_partition_key,
    object_stamp,
    parse_trigger_key,
    quarantine_key,
    quarantine_report_key,
    state_key,
)
from shared.partitions import PartitionManifest, PartitionRef, partition_low
from shared.queues import MessageQueue
from shared.rows import FileFormatError, RowProblem, load_rows, row_json
from shared.schemas import RowModel
from shared.storage import BucketStore, ObjectMissingError, PreconditionFailedError, StoredObject
from shared.tables import TableSpec, get_table

# The user metadata on latest naming the batch that wrote it: the commit point.
BATCH_METADATA = "merge-batch"


class WrongTargetError(ValueError):
    """A notification for another bucket or table than this function's, or not a trigger key."""


class MergeConflictError(Exception):
    """latest kept changing under this merge past the retry budget; SQS will redeliver."""


class BatchBusyError(Exception):
    """Another invocation started this batch moments ago (a duplicate notification)."""


class BatchGoneError(Exception):
    """The named object version no longer exists and no manifest says it was processed."""


class ManifestStatus(StrEnum):
    PREPARED = "prepared"  # planned; latest may or may not have been replaced yet
    COMMITTED = "committed"  # latest and history hold the batch
    EMPTY = "empty"  # checked and found empty
    QUARANTINED = "quarantined"  # rejected, copied to quarantine


class BatchManifest(BaseModel):
    """What one batch did, under `_state/merge/<table>/<etag>/<batch>.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    batch: str
    area: Area
    source_key: str
    source_version: str | None
    etag: str
    stamp: str
    source_last_modified: datetime
    status: ManifestStatus
    rows: int = 0
    counts: MergeCounts = MergeCounts()
    keys_written: list[int] = []
    latest_changed: bool = False
    history_key: str | None = None
    archive_key: str | None = None
    quarantine_key: str | None = None
    report_key: str | None = None
    reason: str | None = None
    problems: int = 0
    from_quarantine: bool = False
    # latest objects the commit stopped listing (replaced partitions), removed after it
    replaced: list[str] = []
    # staged versions were checked against history (so the ABA guard applies)
    checked_history: bool = True


class QuarantineReport(BaseModel):
    """Why a staging file was rejected, row by row."""

    model_config = ConfigDict(defer_build=True)  # only rejected files need it

    table: str
    batch: str
    source_key: str
    source_version: str | None
    quarantine_key: str
    reason: str
    problems: list[RowProblem]


@dataclass(frozen=True)
class ObjectRef:
    """One object version a notification names, and the message that named it."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    message_body: str


@dataclass(frozen=True)
class SourceVersion:
    """The exact staging or baseline version being applied, and its bytes."""

    area: Area
    key: str
    version_id: str | None
    etag: str
    batch: str
    stamp: str
    last_modified: datetime
    data: bytes


@dataclass(frozen=True)
class LatestHead:
    """latest as a merge finds it: the object whose conditional replacement is the commit.

    `key` is `latest/<t>.json`, or `latest/<t>/_manifest.json` for a partitioned table;
    `stored` is None when it does not exist yet. `single` is a one-file latest that a newly
    partitioned table starts from (its rows move into partitions on this merge).
    """

    key: str
    stored: StoredObject | None
    manifest: PartitionManifest | None = None
    single: StoredObject | None = None

    @property
    def partitioned(self) -> bool:
        return self.key.endswith("/_manifest.json")


# What applying a batch decided (its manifest), and whether it was decided just now: then
# nothing after the commit has run for it yet, so those steps need no existence checks.
Applied = tuple["BatchManifest", bool]


@dataclass
class MergePlan:
    """What one merge would commit: the new latest bytes (one file) or partition manifest."""

    result: MergeResult
    data: bytes
    replaced: list[str] = field(default_factory=list)
    # some staged versions were checked against history (late rows, in-file duplicates)
    checked_history: bool = False


def manifest_prefix(table: str, etag: str) -> str:
    return state_key("merge", table, etag) + "/"


def manifest_key(table: str, etag: str, batch: str) -> str:
    return f"{manifest_prefix(table, etag)}{batch}.json"


def pending_prefix(table: str, etag: str) -> str:
    return state_key("merge", table, "pending", etag) + "/"


def pending_key(table: str, etag: str, batch: str) -> str:
    return f"{pending_prefix(table, etag)}{batch}"


def _bare_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


class MergeService:
    """Applies the versions named by notifications to one table of one bucket."""

    def __init__(
        self,
        settings: MergeSettings,
        store: BucketStore,
        publisher: EventPublisher,
        dead_letters: MessageQueue,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.dead_letters = dead_letters

    @property
    def spec(self) -> TableSpec:
        return get_table(self.settings.table_name)

    # ---- entry point -------------------------------------------------------------------

    def process(self, ref: ObjectRef) -> BatchManifest | None:
        started = time.monotonic()
        try:
            return self._process(ref)
        finally:
            metrics.add_metric("MergeDuration", MetricUnit.Milliseconds, _ms_since(started))

    def _process(self, ref: ObjectRef) -> BatchManifest | None:
        area = self._check_target(ref)
        source = self._locate(ref, area)
        if source is None:
            return self._finish_gone(ref, area)
        marker = ref.version_id is None and area is Area.STAGING
        if area is Area.BASELINE:  # never deleted, so redelivered ones find it: look first
            outcome = self._take_up(source, ref.message_body, started=False)
        elif marker and self._claim(source):
            outcome = self._take_up(source, ref.message_body, started=True)
        else:
            # We created the marker (nobody had started this batch), or there is none (AWS
            # names the version): then the batch's first manifest write is create-only, and
            # a 412 there says another invocation got to it first. No GET of it is needed.
            outcome = self._apply(source, ref.message_body, prepared=None, owner=marker)
        if outcome is not None:
            manifest, fresh = outcome
            self._finish(manifest, source.data, fresh=fresh, marker=marker)
            return manifest
        return None

    def _take_up(
        self, source: SourceVersion, message_body: str | None, *, started: bool = True
    ) -> Applied | None:
        """A batch that may have been started before (`started`: it was): finish it, or take
        it over once its lease has run out (it may have got as far as the commit)."""
        found = self.store.get_if_exists(manifest_key(self.spec.name, source.etag, source.batch))
        if found is None:
            return self._apply(
                source, message_body, prepared=None, owner=started, taken_over=started
            )
        manifest = BatchManifest.model_validate_json(found.data)
        if manifest.status is not ManifestStatus.PREPARED:
            return manifest, False  # decided before: only what follows the commit is left
        if self._was_committed(manifest):  # and only what follows the commit is left
            return self._mark_committed(source, manifest), False
        self._check_lease(found.key, found.last_modified)
        return self._apply(source, message_body, prepared=manifest, owner=True, taken_over=True)

    def _claim(self, source: SourceVersion) -> bool:
        """Start a batch named without a versionId (moto's notifications): a marker created
        only once, which also says "in progress" until the events are out, so a redelivery can
        still find the batch after its version is deleted. True when another invocation had
        started it (then its lease must have run out)."""
        marker = pending_key(self.spec.name, source.etag, source.batch)
        try:
            self.store.put(marker, b"", create_only=True)
        except PreconditionFailedError:
            found = self.store.get_if_exists(marker)
            if found is not None:
                self._check_lease(marker, found.last_modified)
            return True
        return False

    def _check_lease(self, key: str, started: datetime) -> None:
        """Leave a batch another invocation started recently to it (the record is retried
        later, when it will be done); take it over once that one must have timed out."""
        age = (datetime.now(UTC) - started).total_seconds()
        if age < self.settings.lease_seconds:
            raise BatchBusyError(
                f"{key} was written {age:.0f}s ago: another invocation is on this batch; "
                "retrying later"
            )
        logger.warning("taking over a batch left unfinished", extra={"key": key, "age": age})

    def _check_target(self, ref: ObjectRef) -> Area:
        if ref.bucket != self.settings.bucket_name:
            raise WrongTargetError(
                f"notification for bucket {ref.bucket!r}, this function merges "
                f"{self.settings.bucket_name!r}"
            )
        try:
            trigger = parse_trigger_key(ref.key)
        except ValueError as exc:
            raise WrongTargetError(str(exc)) from None
        if trigger.table.name != self.settings.table_name:
            raise WrongTargetError(
                f"key {ref.key!r} is for table {trigger.table.name!r}, "
                f"this function merges {self.settings.table_name!r}"
            )
        return trigger.area

    def _locate(self, ref: ObjectRef, area: Area) -> SourceVersion | None:
        """The exact version the event names; None when it is gone (already processed)."""
        version_id = ref.version_id
        if version_id is None:
            # moto's events carry no versionId: find the version by its ETag. Of several
            # versions with one content, take the oldest still there: each is one batch.
            etag = _bare_etag(ref.etag)
            if not etag:
                raise WrongTargetError(
                    f"notification for {ref.key!r} has neither versionId nor eTag"
                )
            matching = [v for v in self.store.versions(ref.key) if _bare_etag(v.etag) == etag]
            if not matching:
                return None
            version_id = matching[-1].version_id
        try:
            found = self.store.get(ref.key, version_id)
        except ObjectMissingError:
            return None
        return _source_version(area, found)

    # ---- applying a batch --------------------------------------------------------------

    def _apply(
        self,
        source: SourceVersion,
        message_body: str | None,
        *,
        prepared: BatchManifest | None,
        owner: bool,
        from_quarantine: bool = False,
        taken_over: bool = False,
    ) -> Applied | None:
        """Validate and merge; returns the manifest and whether anything after the commit
        has run for it yet (`fresh`: no).

        `owner`: this invocation may write the batch's manifest freely. Otherwise its first
        write is create-only, the claim: a 412 there means another invocation started the
        batch, which is then taken up as one found started (`_take_up`).
        """
        spec = self.spec
        try:
            report = load_rows(spec, source.data, source.key)
            problems, reason = report.problems, f"{len(report.problems)} row problem(s)"
        except FileFormatError as exc:
            report, problems, reason = None, [], str(exc)
        if report is None or problems:
            if message_body is None:
                raise RuntimeError(f"{source.key}: a re-validated file failed again: {reason}")
            if not owner and self._read_manifest(source.etag, source.batch) is not None:
                return self._take_up(source, message_body)  # decided before: no 2nd DLQ
            return self._quarantine(source, message_body, reason, problems), True
        if not report.rows and source.area is Area.STAGING:
            manifest = self._new_manifest(source, ManifestStatus.EMPTY)
            if not self._write_manifest(manifest, claim=not owner):
                return self._take_up(source, message_body)
            logger.info("checked and found empty", extra=self._log_fields(source))
            return manifest, True

        for attempt in range(self.settings.conflict_retries + 1):
            head = self._read_head()
            # With no plan written before, no earlier attempt can have committed: a plan
            # always precedes the commit. So only search versions when there was one, or
            # when another invocation had started the batch (its plan may be on its way).
            search = prepared is not None or taken_over or attempt > 0
            if self._committed(source.batch, source.last_modified, head.stored, search=search):
                return self._mark_committed(source), False
            # A baseline that arrives after latest exists (its first delivery failed, or it
            # was re-taken) is merged by the same rules as staging: newer rows win, the
            # others go to history. Ignoring it would lose the versions only it holds.
            plan = self._merge(source, report.rows, head)
            result = plan.result
            manifest = self._manifest_of(source, result, len(report.rows), from_quarantine)
            if not result.changes_anything:
                manifest = manifest.model_copy(update={"status": ManifestStatus.COMMITTED})
                if not self._write_manifest(manifest, claim=not owner):
                    return self._take_up(source, message_body)
                self._drop_orphan_history(prepared)
                self._count(manifest)
                return manifest, True
            manifest = manifest.model_copy(
                update={"replaced": plan.replaced, "checked_history": plan.checked_history}
            )
            if not self._write_manifest(manifest, claim=not owner):
                return self._take_up(source, message_body)
            owner = True
            if result.history and manifest.history_key:
                self.store.put(manifest.history_key, dump_history(spec, result.history))
            else:
                self._drop_orphan_history(prepared)
            prepared = manifest
            try:
                self.store.put(
                    head.key,
                    plan.data,
                    if_match=None if head.stored is None else head.stored.etag,
                    create_only=head.stored is None,
                    metadata={BATCH_METADATA: source.batch},
                )
            except PreconditionFailedError:
                logger.warning(
                    "latest changed while merging: re-reading and merging again",
                    extra={**self._log_fields(source), "attempt": attempt + 1},
                )
                continue
            if plan.checked_history and head.stored is not None and not head.partitioned:
                # If-Match compares content digests: a commit that left latest's bytes as
                # they were may have come between our read and our commit, unseen
                manifest = self._drop_history_committed_before(source, manifest)
            self._log_merged(source, manifest, result)
            # The manifest stays "prepared": latest naming the batch is what says committed
            # (a redelivery finds it there), so no request is spent rewriting it.
            committed = manifest.model_copy(update={"status": ManifestStatus.COMMITTED})
            self._count(committed)
            return committed, True
        raise MergeConflictError(
            f"{source.key} batch {source.batch}: latest kept changing, "
            f"{self.settings.conflict_retries + 1} attempts"
        )

    def _latest_key(self) -> str:
        """The key events name as latest: the file, or the manifest of a partitioned table."""
        name = self.spec.name
        return (
            latest_key(name) if self.spec.rows_per_partition is None else latest_manifest_key(name)
        )

    def _read_head(self) -> LatestHead:
        """One GET in the steady state: the single file, or the partition manifest."""
        spec = self.spec
        single_key, manifest_key_ = latest_key(spec.name), latest_manifest_key(spec.name)
        if spec.rows_per_partition is None:
            single = self.store.get_if_exists(single_key)
            if single is not None:
                return LatestHead(single_key, single)
        found = self.store.get_if_exists(manifest_key_)
        if found is not None:  # partitioned stays partitioned (the manifest says how wide)
            manifest = PartitionManifest.model_validate_json(found.data)
            return LatestHead(manifest_key_, found, manifest=manifest)
        if spec.rows_per_partition is None:
            return LatestHead(single_key, None)
        return LatestHead(manifest_key_, None, single=self.store.get_if_exists(single_key))

    def _merge(self, source: SourceVersion, staged: list[RowModel], head: LatestHead) -> MergePlan:
        """Merge the staged rows into latest, touching only the rows (and partitions) whose
        keys the batch names; the rest of latest is neither parsed nor validated."""
        spec = self.spec
        if head.partitioned:
            held, data, replaced, parts = self._merge_partitions(source, staged, head)
            result = _combined(spec, parts)
        else:
            current = (
                RowsFile.empty(spec, head.key)
                if head.stored is None
                else RowsFile.parse(spec, head.stored.data, head.key)
            )
            held = current.held({primary_key(spec, row) for row in staged})
            result = merge(spec, list(held.values()), staged, source.batch)
            data, replaced = current.replaced(_written_rows(spec, result)).dump(), []
        # Which rows go to latest never depends on history; which superseded versions go to
        # history does, for late rows and in-file duplicates only (rare): redo those with it.
        needed = keys_needing_history(spec, list(held.values()), staged)
        if needed:
            known = self._known_history(source, needed)
            result = merge(spec, list(held.values()), staged, source.batch, known)
        return MergePlan(result=result, data=data, replaced=replaced, checked_history=bool(needed))

    def _merge_partitions(
        self, source: SourceVersion, staged: list[RowModel], head: LatestHead
    ) -> tuple[dict[int, RowModel], bytes, list[str], list[MergeResult]]:
        """Each partition the batch touches, one at a time: read, splice, write a new object.

        Returns the rows latest held for the staged keys, the new manifest, the partition
        objects it no longer lists, and each partition's merge. New partition objects are
        invisible until the manifest that lists them is committed.
        """
        spec = self.spec
        manifest = head.manifest
        width = manifest.rows_per_partition if manifest else spec.rows_per_partition
        assert width is not None  # a partitioned head has a width
        listed = manifest.by_low() if manifest else {}
        groups: dict[int, list[RowModel]] = {}
        for row in staged:
            groups.setdefault(partition_low(primary_key(spec, row), width), []).append(row)
        lows = set(groups)
        moving = None
        if head.single is not None:  # becoming partitioned: every row moves to a partition
            moving = RowsFile.parse(spec, head.single.data, head.single.key)
            span = moving.first_and_last_keys()
            if span is not None:
                lows |= set(range(partition_low(span[0], width), span[1] + 1, width))
        held: dict[int, RowModel] = {}
        parts: list[MergeResult] = []
        refs = dict(listed)
        replaced = [head.single.key] if head.single is not None else []
        for low in sorted(lows):
            high = low + width - 1
            if moving is not None:
                current = moving.slice(low, high)
            elif low in listed:
                ref = listed[low]
                current = RowsFile.parse(
                    spec, self.store.get(ref.key, ref.version_id).data, ref.key
                )
            else:
                current = RowsFile.empty(spec, f"{head.key} [{low}-{high}]")
            part_staged = groups.get(low, [])
            part_held = current.held({primary_key(spec, row) for row in part_staged})
            held.update(part_held)
            decided = merge(spec, list(part_held.values()), part_staged, source.batch)
            parts.append(decided)
            if not decided.latest_changed and (moving is None or not current.rows):
                continue
            new = current.replaced(_written_rows(spec, decided))
            data = new.dump()
            digest = hashlib.blake2b(data, digest_size=6).hexdigest()
            key = latest_partition_key(spec.name, low, high, source.batch, digest)
            written = self.store.put(key, data)
            refs[low] = PartitionRef(
                low=low, high=high, key=key, version_id=written.version_id, rows=new.rows
            )
            if low in listed:
                replaced.append(listed[low].key)
        new_manifest = PartitionManifest(
            table=spec.name,
            batch=source.batch,
            rows_per_partition=width,
            partitions=[refs[low] for low in sorted(refs)],
        )
        return held, new_manifest.model_dump_json(indent=1).encode(), replaced, parts

    def _known_history(self, source: SourceVersion, needed: set[int]) -> list[RowModel]:
        """The versions already in history of the keys that may have some there (rare)."""
        spec = self.spec
        known: list[RowModel] = []
        if needed:
            own = history_key(spec.name, source.stamp, source.batch)
            for key in self.store.keys(history_prefix(spec.name)):
                if key == own:  # this batch's own (uncommitted) history is being rewritten
                    continue
                rows = load_history(spec, self.store.get(key).data, key)
                known.extend(h.row for h in rows if getattr(h.row, spec.primary_key) in needed)
        return known

    def _committed(
        self, batch: str, since: datetime, latest: StoredObject | None, *, search: bool = True
    ) -> bool:
        """Did some earlier attempt replace latest with this batch (the commit point)?

        Only versions of latest written after the source object can hold it, so the search
        stops there; usually latest itself answers.
        """
        if latest is None:
            return False
        if latest.metadata.get(BATCH_METADATA) == batch:
            return True
        if not search:
            return False
        for version in self.store.iter_versions(latest.key):
            if version.last_modified < since:
                break
            if version.version_id == latest.version_id:
                continue
            try:
                meta = self.store.metadata(latest.key, version.version_id)
            except ObjectMissingError:
                continue
            if meta.get(BATCH_METADATA) == batch:
                return True
        return False

    def _was_committed(self, manifest: BatchManifest) -> bool:
        """Does latest, or a version of it since the source object, name this batch?"""
        head = self._read_head()
        return self._committed(manifest.batch, manifest.source_last_modified, head.stored)

    def _mark_committed(
        self, source: SourceVersion, prepared: BatchManifest | None = None
    ) -> BatchManifest:
        """The manifest of a batch latest already took, as committed (not written back: a
        replay must change nothing, and latest is what says committed)."""
        prepared = prepared or self._read_manifest(source.etag, source.batch)
        if prepared is None:
            raise RuntimeError(f"latest names batch {source.batch} but it has no manifest")
        logger.info("batch already applied to latest", extra=self._log_fields(source))
        if prepared.status is ManifestStatus.COMMITTED:
            return prepared
        if prepared.checked_history and self.spec.rows_per_partition is None:
            # a crash may have come between the commit and this guard: run it again
            # (idempotent: it drops nothing the second time)
            prepared = self._drop_history_committed_before(source, prepared)
        return prepared.model_copy(update={"status": ManifestStatus.COMMITTED})

    def _drop_history_committed_before(
        self, source: SourceVersion, manifest: BatchManifest
    ) -> BatchManifest:
        """Guard against an ABA on latest's ETag.

        S3's If-Match compares ETags, and an ETag is the content's digest. A merge that leaves
        latest's rows as they were (it only adds late versions to history) writes the same
        bytes, so the same ETag: a merge that read latest before such a commit still passes
        If-Match after it, never having seen that commit's history. When our merge checked
        versions against history (the only versions two merges can both add), find the
        commits between the version we read and ours (the versions just before ours with the
        bytes our If-Match matched) and drop from our history object every version one of
        theirs already holds. Only the later commit drops, so each version stays once.
        """
        if not manifest.history_key or not self.store.exists(manifest.history_key):
            return manifest
        key = self._latest_key()
        earlier: list[str] = []
        found_ours = False
        matched: str | None = None  # the ETag our If-Match matched
        for version in self.store.iter_versions(key):  # newest first
            if not found_ours and version.last_modified < source.last_modified:
                break  # our commit is not among these versions: nothing to compare
            try:
                batch = self.store.metadata(key, version.version_id).get(BATCH_METADATA)
            except ObjectMissingError:
                continue
            if batch == source.batch:  # ours (or a twin's commit of this batch)
                found_ours = True
                continue
            if not found_ours:
                continue
            etag = _bare_etag(version.etag)
            if matched is None:
                matched = etag
            elif etag != matched:
                break  # bytes changed here: a commit we must have read, history and all
            if batch:
                earlier.append(batch)
        if not earlier:
            return manifest
        spec = self.spec
        suffixes = tuple(f"_{batch}.json" for batch in earlier)
        held = {
            row_json(spec, item.row)
            for other in self.store.keys(history_prefix(spec.name))
            if other.endswith(suffixes)
            for item in load_history(spec, self.store.get(other).data, other)
        }
        mine = load_history(spec, self.store.get(manifest.history_key).data, manifest.history_key)
        keep = [item for item in mine if row_json(spec, item.row) not in held]
        if len(keep) == len(mine):
            return manifest
        self.store.put(manifest.history_key, dump_history(spec, keep))
        logger.info(
            "dropped history rows an earlier commit of the same latest holds",
            extra={**self._log_fields(source), "dropped": len(mine) - len(keep)},
        )
        counts = manifest.counts.model_copy(update={"history_rows": len(keep)})
        return manifest.model_copy(update={"counts": counts})

    def _drop_orphan_history(self, prepared: BatchManifest | None) -> None:
        """An uncommitted attempt's history object must not outlive a plan without history."""
        if (
            prepared is not None
            and prepared.history_key
            and self.store.exists(prepared.history_key)
        ):
            self.store.delete(prepared.history_key)

    # ---- bad input ---------------------------------------------------------------------

    def _quarantine(
        self, source: SourceVersion, message_body: str, reason: str, problems: list[RowProblem]
    ) -> BatchManifest:
        table = self.spec.name
        copy_key = quarantine_key(table, source.stamp, source.batch)
        report_key = quarantine_report_key(table, source.stamp, source.batch)
        if not self.store.exists(copy_key):
            self.store.put(copy_key, source.data, content_type="application/octet-stream")
        report = QuarantineReport(
            table=table,
            batch=source.batch,
            source_key=source.key,
            source_version=source.version_id,
            quarantine_key=copy_key,
            reason=reason,
            problems=problems,
        )
        if not self.store.exists(report_key):
            self.store.put(report_key, report.model_dump_json(indent=2).encode())
        # A deterministic error: straight to the DLQ (which pauses ingest), no retries.
        self.dead_letters.send(message_body)
        manifest = self._new_manifest(source, ManifestStatus.QUARANTINED).model_copy(
            update={
                "quarantine_key": copy_key,
                "report_key": report_key,
                "reason": reason,
                "problems": len(problems),
            }
        )
        self._write_manifest(manifest)
        logger.error(
            "rejected: quarantined with a report, message sent to the DLQ",
            extra={**self._log_fields(source), "reason": reason, "problems": len(problems)},
        )
        for problem in problems[:20]:
            logger.debug("row problem", extra={"problem": str(problem)})
        metrics.add_metric("RejectedRows", MetricUnit.Count, max(len(problems), 1))
        return manifest

    # ---- after the commit --------------------------------------------------------------

    def _finish(
        self,
        manifest: BatchManifest,
        data: bytes | None,
        *,
        fresh: bool = False,
        marker: bool | None = None,
    ) -> None:
        """Drop replaced partitions, archive, delete the staging version, emit events: each
        skipped when already done. `fresh`: this invocation just committed the batch, so none
        of these has run yet and the checks (a request each) are skipped."""
        fields = self._manifest_log_fields(manifest)
        if manifest.status is ManifestStatus.PREPARED:
            raise RuntimeError(f"batch {manifest.batch} is not committed")
        committed = manifest.status is ManifestStatus.COMMITTED
        if committed and manifest.replaced:
            # bare deletes: the old objects stay as noncurrent versions (the lifecycle rule
            # of latest/ keeps them a while), so a reader holding the old manifest, which
            # names their versions, still finds them
            gone = [k for k in manifest.replaced if fresh or self.store.exists(k)]
            if gone:
                self.store.delete_keys(gone)
        archive = manifest.archive_key if committed else None
        if archive and (fresh or not self.store.exists(archive)):
            if data is None:
                raise BatchGoneError(f"{manifest.source_key}: no bytes left to archive")
            self.store.put(archive, data)
            logger.info("archived", extra={**fields, "archive_key": archive})
        if manifest.status is ManifestStatus.COMMITTED and manifest.from_quarantine:
            table, stamp, batch = manifest.table, manifest.stamp, manifest.batch
            for key in (
                quarantine_key(table, stamp, batch),
                quarantine_report_key(table, stamp, batch),
            ):
                if self.store.exists(key):
                    self.store.delete(key)
                    logger.info("left quarantine", extra={**fields, "quarantine_key": key})
        version = manifest.source_version
        if (
            manifest.area is Area.STAGING
            and version
            and (fresh or self._version_exists(manifest.source_key, version))
        ):  # never a bare delete: only this version, so a newer upload stays visible
            self.store.delete_version(manifest.source_key, version)
            logger.info("deleted the staging version", extra=fields)
        self.publisher.publish(self._events(manifest))
        pending = pending_key(manifest.table, manifest.etag, manifest.batch)
        # a quarantined batch stays pending: a redrive comes back for it. `marker`: whether
        # this batch has one (None: unknown, look)
        pending_left = manifest.status is not ManifestStatus.QUARANTINED and (
            manifest.area is Area.STAGING
        )
        if pending_left and (self.store.exists(pending) if marker is None else marker):
            self.store.delete(pending)

    def _version_exists(self, key: str, version_id: str) -> bool:
        return any(v.version_id == version_id for v in self.store.versions(key))

    def _finish_gone(self, ref: ObjectRef, area: Area) -> BatchManifest | None:
        """The named version is gone: the batch was processed; finish what is left."""
        table = self.spec.name
        etag = _bare_etag(ref.etag)
        if ref.version_id:
            found = self._read_manifest(etag, batch_id(ref.version_id, etag))
            manifests = [found] if found else []
        else:
            # No versionId (moto): the batches of this content still in progress, if any.
            batches = [
                key.rsplit("/", 1)[1] for key in self.store.keys(pending_prefix(table, etag))
            ]
            manifests = [m for m in map(partial(self._read_manifest, etag), batches) if m]
            if not manifests:
                logger.info(
                    "already processed: no version with this eTag is left",
                    extra={"table": table, "key": ref.key, "etag": etag},
                )
                return None
        if not manifests:
            raise BatchGoneError(
                f"{ref.key} version {ref.version_id or 'with eTag ' + etag} is gone and no "
                "manifest records it: nothing to merge"
            )
        last = None
        for manifest in manifests:
            last = self._resume(manifest)
        return last

    def _resume(self, manifest: BatchManifest) -> BatchManifest | None:
        if manifest.status is ManifestStatus.QUARANTINED or (
            manifest.status is ManifestStatus.PREPARED and manifest.from_quarantine
        ):
            return self._revalidate(manifest)
        if manifest.status is ManifestStatus.PREPARED:
            if not self._was_committed(manifest):
                raise BatchGoneError(
                    f"{manifest.source_key} batch {manifest.batch}: planned, but its version "
                    "is gone and latest never took it"
                )
            manifest = manifest.model_copy(update={"status": ManifestStatus.COMMITTED})
        self._finish(manifest, None)
        return manifest

    def _revalidate(self, manifest: BatchManifest) -> BatchManifest | None:
        """A redriven message whose file sits in quarantine: validate the copy again."""
        copy_key = manifest.quarantine_key or quarantine_key(
            manifest.table, manifest.stamp, manifest.batch
        )
        try:
            data = self.store.get(copy_key).data
        except ObjectMissingError:
            logger.warning("quarantined copy is gone; nothing to do", extra={"key": copy_key})
            return manifest
        source = SourceVersion(
            area=manifest.area,
            key=manifest.source_key,
            version_id=manifest.source_version,
            etag=manifest.etag,
            batch=manifest.batch,
            stamp=manifest.stamp,
            last_modified=manifest.source_last_modified,
            data=data,
        )
        try:
            report = load_rows(self.spec, data, manifest.source_key)
            still_bad = bool(report.problems)
        except FileFormatError:
            still_bad = True
        if still_bad and manifest.status is ManifestStatus.QUARANTINED:
            logger.warning("still rejected: stays in quarantine", extra=self._log_fields(source))
            self.publisher.publish(self._events(manifest))
            return manifest
        prepared = manifest if manifest.status is ManifestStatus.PREPARED else None
        applied = self._apply(source, None, prepared=prepared, owner=True, from_quarantine=True)
        if applied is None:
            return None
        result, fresh = applied
        self._finish(result, data, fresh=fresh)
        return result

    # ---- manifests, events, logs -------------------------------------------------------

    def _read_manifest(self, etag: str, batch: str) -> BatchManifest | None:
        found = self.store.get_if_exists(manifest_key(self.spec.name, etag, batch))
        return None if found is None else BatchManifest.model_validate_json(found.data)

    def _write_manifest(self, manifest: BatchManifest, *, claim: bool = False) -> bool:
        """Write the batch's manifest; with `claim`, only if it has none yet (False if so)."""
        key = manifest_key(manifest.table, manifest.etag, manifest.batch)
        try:
            self.store.put(key, manifest.model_dump_json(indent=1).encode(), create_only=claim)
        except PreconditionFailedError:
            return False
        return True

    def _new_manifest(self, source: SourceVersion, status: ManifestStatus) -> BatchManifest:
        return BatchManifest(
            table=self.spec.name,
            batch=source.batch,
            area=source.area,
            source_key=source.key,
            source_version=source.version_id,
            etag=source.etag,
            stamp=source.stamp,
            source_last_modified=source.last_modified,
            status=status,
        )

    def _manifest_of(
        self, source: SourceVersion, result: MergeResult, rows: int, from_quarantine: bool
    ) -> BatchManifest:
        table = self.spec.name
        return self._new_manifest(source, ManifestStatus.PREPARED).model_copy(
            update={
                "rows": rows,
                "counts": MergeCounts(
                    inserted=len(result.inserted),
                    updated=len(result.updated),
                    unchanged=len(result.unchanged),
                    late=len(result.late),
                    history_rows=len(result.history),
                ),
                "keys_written": result.keys_written,
                "latest_changed": result.latest_changed,
                "history_key": (
                    history_key(table, source.stamp, source.batch) if result.history else None
                ),
                "archive_key": (
                    archive_key(table, source.stamp, source.batch)
                    if source.area is Area.STAGING
                    else None
                ),
                "from_quarantine": from_quarantine,
            }
        )

    def _events(self, manifest: BatchManifest) -> list[EventDetail]:
        common = {
            "table": manifest.table,
            "batch": manifest.batch,
            "source_key": manifest.source_key,
            "source_version": manifest.source_version,
        }
        if manifest.status is ManifestStatus.EMPTY:
            return [StagingEmpty.for_batch(**common)]
        if manifest.status is ManifestStatus.QUARANTINED:
            return [
                StagingRejected.for_batch(
                    **common,
                    quarantine_key=manifest.quarantine_key,
                    report_key=manifest.report_key,
                    problems=manifest.problems,
                    reason=manifest.reason or "",
                )
            ]
        keys, truncated = keys_listed(manifest.keys_written)
        appended = HistoryAppended.for_batch(
            **common,
            latest_key=self._latest_key(),
            history_key=manifest.history_key,
            keys_written=keys,
            keys_truncated=truncated,
            counts=manifest.counts,
        )
        if manifest.area is Area.BASELINE:
            promoted = BaselinePromoted.for_batch(
                **common, latest_key=self._latest_key(), rows=manifest.rows
            )
            # a baseline merged into an existing latest may have superseded rows
            return [promoted, appended] if manifest.history_key else [promoted]
        return [
            appended,
            StagingArchived.for_batch(
                **common, archive_key=manifest.archive_key, rows=manifest.rows
            ),
        ]

    def _count(self, manifest: BatchManifest) -> None:
        counts = manifest.counts
        for name, value in (
            ("InsertedRows", counts.inserted),
            ("UpdatedRows", counts.updated),
            ("UnchangedRows", counts.unchanged),
            ("LateRows", counts.late),
            ("HistoryRows", counts.history_rows),
        ):
            metrics.add_metric(name, MetricUnit.Count, value)

    def _log_fields(self, source: SourceVersion) -> dict[str, object]:
        return {
            "table": self.spec.name,
            "batch": source.batch,
            "key": source.key,
            "version": source.version_id,
        }

    def _manifest_log_fields(self, manifest: BatchManifest) -> dict[str, object]:
        return {"table": manifest.table, "batch": manifest.batch, "key": manifest.source_key}

    def _log_merged(
        self, source: SourceVersion, manifest: BatchManifest, result: MergeResult
    ) -> None:
        fields = {**self._log_fields(source), **manifest.counts.model_dump()}
        if result.latest_changed:
            verb = "merged baseline into latest" if source.area is Area.BASELINE else None
            logger.info(verb or "appended to latest", extra=fields)
        if result.history:
            logger.info("moved to history", extra={**fields, "history_key": manifest.history_key})
        logger.debug(
            "rows written",
            extra={"inserted": result.inserted, "updated": result.updated, "late": result.late},
        )


def _source_version(area: Area, found: StoredObject) -> SourceVersion:
    return SourceVersion(
        area=area,
        key=found.key,
        version_id=found.version_id,
        etag=_bare_etag(found.etag),
        batch=batch_id(found.version_id, found.etag),
        stamp=object_stamp(found.last_modified),
        last_modified=found.last_modified,
        data=found.data,
    )


def _combined(spec: TableSpec, parts: list[MergeResult]) -> MergeResult:
    """One batch's merge from its partitions' (disjoint keys, so just put together)."""
    combined = MergeResult(latest=[], history=[])
    for part in parts:
        combined.latest.extend(part.latest)
        combined.history.extend(part.history)
        for mine, theirs in (
            (combined.inserted, part.inserted),
            (combined.updated, part.updated),
            (combined.unchanged, part.unchanged),
            (combined.late, part.late),
        ):
            mine.extend(theirs)
    combined.history.sort(key=lambda h: (primary_key(spec, h.row), h.row.last_updated))
    return combined


def _written_rows(spec: TableSpec, decided: MergeResult) -> dict[int, RowModel]:
    """The rows a merge inserts or updates, by key."""
    written = set(decided.keys_written)
    return {
        primary_key(spec, row): row for row in decided.latest if primary_key(spec, row) in written
    }


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
