"""Applies one object version (a staging or baseline file of one table): one readable loop.

locate the version → validate its rows → plan on the committed state → commit a log entry →
copy it to history and latest → finish (archive, events, delete the version). The protocol and
why it cannot lose or double a version: docs/merge_protocol.md. Everything is named from the
batch id and the source object's own stamp, never the clock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit

from services.merge.commit import CommitLog
from services.merge.drift import apply_policy
from services.merge.finish import Finisher
from services.merge.known import known_history
from services.merge.observability import logger, metrics
from services.merge.outcome import Outcome
from services.merge.plan import Batch, Planner, counts_of
from services.merge.quarantine import quarantine, read_record
from services.merge.rules import MergeResult
from services.merge.settings import MergeSettings
from services.merge.source import ObjectRef, SourceVersion, locate
from services.merge.staged import load_staged
from services.merge.state import TableState
from shared.commitlog import SEQ_METADATA, LogEntry, MergeStatus
from shared.deployment_facts import MAX_RECEIVE_COUNT
from shared.events import EventSink
from shared.layout import (
    Area,
    archive_key,
    batch_id,
    parse_trigger_key,
)
from shared.queues import MessageSink
from shared.rows import FileFormatError, RowProblem
from shared.schema_state import effective_spec
from shared.storage import ObjectMissingError
from shared.tables import TableSpec, get_table

if TYPE_CHECKING:
    from shared.storage import ObjectStore


class WrongTargetError(ValueError):
    """A notification for another bucket or table than this function's, or not a trigger key."""


class MergeConflictError(Exception):
    """The log kept moving under this merge past the retry budget; SQS will redeliver."""


class PreviousVersionMissingError(Exception):
    """Rows need a version of their key that no committed batch holds yet (an update without
    its unchanged TOAST values, whose earlier file is still on its way): SQS redelivers it,
    and on its last delivery the batch is quarantined instead."""


class MergeService:
    """Applies the versions named by notifications to one table of one bucket."""

    def __init__(
        self,
        settings: MergeSettings,
        store: ObjectStore,
        publisher: EventSink,
        dead_letters: MessageSink,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.planner = Planner(store, partial(known_history, store))

    @property
    def spec(self) -> TableSpec:
        """The registry's entry, read per use (a deploy or a test may change the registry);
        for the row model, a batch reads the bucket's schema state once (`_batch_spec`)."""
        return get_table(self.settings.table_name)

    def _batch_spec(self) -> TableSpec:
        """The spec one batch is validated and merged with, from start to end: the registry's
        with the columns the schema state adds (shared/schema_state.py)."""
        return effective_spec(self.store, self.spec)

    @property
    def finisher(self) -> Finisher:
        return Finisher(self.store, self.publisher, self.settings.table_name)

    def process(self, ref: ObjectRef) -> Outcome | None:
        started = time.monotonic()
        try:
            area = self._check_target(ref)
            source = locate(self.store, ref, area)
            outcome = (
                self._redrive(ref)
                if source is None
                else self.apply(source, ref.message_body, last_try=self._last_try(ref))
            )
            if outcome is not None:
                self.finisher.finish(outcome)
            return outcome
        finally:
            elapsed = round((time.monotonic() - started) * 1000, 3)
            metrics.add_metric("MergeDuration", MetricUnit.Milliseconds, elapsed)

    def apply(
        self, source: SourceVersion, message_body: str | None, *, last_try: bool = True
    ) -> Outcome:
        """Validate, then merge (or quarantine) one version; `last_try` False: rows waiting for
        an earlier batch raise PreviousVersionMissingError (for SQS to retry) instead."""
        spec = self._batch_spec()
        try:
            report = load_staged(spec, source.data, source.key, source.observed)
        except FileFormatError as exc:
            return self._reject(source, message_body, str(exc), [])
        if report.new_columns:
            drifted = apply_policy(self.store, self.publisher, spec, source, report)
            spec, report = drifted.spec, drifted.report
        if report.problems:
            return self._reject(source, message_body, None, report.problems, report.new_columns)
        if not report.items:
            logger.info("checked and found empty", extra=self._fields(source))
            return Outcome(MergeStatus.EMPTY, source)
        return self._merge(spec, Batch(source, report.items), message_body, last_try)

    def _reject(
        self,
        source: SourceVersion,
        message_body: str | None,
        reason: str | None,
        problems: list[RowProblem],
        drift: Sequence[str] = (),
    ) -> Outcome:
        if message_body is None:  # a quarantined copy still bad: it stays there
            raise FileFormatError(source.key, reason or f"{len(problems)} row problem(s)")
        return quarantine(
            self.store,
            self.dead_letters,
            source,
            message_body,
            reason or f"{len(problems)} row problem(s)",
            problems,
            drift=list(drift),
        )

    # ---- the commit loop ----------------------------------------------------------------

    def _merge(
        self, spec: TableSpec, batch: Batch, message_body: str | None, last_try: bool
    ) -> Outcome:
        log = CommitLog(self.store, spec, self.settings.conflict_retries)
        state = log.read_state()
        for attempt in range(self.settings.conflict_retries + 1):
            plan = self.planner.plan(state, batch)
            if plan.result.problems:  # rows that cannot be merged on this state (TOAST)
                if not last_try:
                    raise PreviousVersionMissingError(
                        f"{batch.source.key} batch {batch.source.batch}: "
                        f"{plan.result.problems[0]}; retried until an earlier batch holds it"
                    )
                return self._reject(batch.source, message_body, None, plan.result.problems)
            if plan.entry is None:  # nothing to commit, if the state is the log's head
                ahead = log.roll_forward(state)
                if ahead.seq != state.seq:
                    state = ahead
                    continue
                return self._unchanged(log, log.materialize(state), batch, plan.result)
            if log.try_commit(plan.entry):
                log.materialize(state.apply(plan.entry))
                self._count(plan.entry)
                logger.info(
                    "committed", extra={**self._fields(batch.source), "seq": plan.entry.seq}
                )
                return Outcome.committed(batch.source, plan.entry, fresh=True)
            winner = log.entry(plan.entry.seq)
            assert winner is not None  # a refused create-only write means the entry exists
            state = state.apply(winner)
            if winner.batch == batch.source.batch:  # a twin of this batch committed it
                log.materialize(state)
                return Outcome.committed(batch.source, winner, fresh=False)
            logger.info(
                "another batch committed first: merging again on its entry",
                extra={**self._fields(batch.source), "seq": winner.seq, "attempt": attempt + 1},
            )
        raise MergeConflictError(
            f"{batch.source.key} batch {batch.source.batch}: the log kept moving, "
            f"{self.settings.conflict_retries + 1} attempts"
        )

    def _unchanged(
        self, log: CommitLog, state: TableState, batch: Batch, result: MergeResult
    ) -> Outcome:
        """Nothing to commit: the batch is already there (a redelivery, a twin, a replay), or
        every row is what latest holds. Its events repeat its commit's when there was one."""
        entry = self._own_entry(log, state, batch.source)
        if entry is not None:
            return Outcome.committed(batch.source, entry, fresh=False)
        return Outcome(
            MergeStatus.UNCHANGED,
            batch.source,
            rows=len(batch.rows),
            counts=counts_of(result),
            layout=state.layout,
        )

    def _own_entry(
        self, log: CommitLog, state: TableState, source: SourceVersion
    ) -> LogEntry | None:
        """The entry that committed this batch, if one did: the pending entries, latest or the
        batch's archive (written after its commit) name it; else the entries back to the
        first committed before the source object was created (none can hold it)."""
        for entry in state.pending:
            if entry.batch == source.batch:
                return entry
        if state.head_batch == source.batch:
            return log.entry(state.seq)
        try:
            seq = self.store.metadata(
                archive_key(self.spec.name, source.ref.stamp, source.batch)
            ).get(SEQ_METADATA)
        except ObjectMissingError:
            seq = None
        if seq:
            return log.entry(int(seq))
        return log.find(source.batch, since=source.ref.last_modified, below=state.seq)

    # ---- a version that is gone -------------------------------------------------------

    def _redrive(self, ref: ObjectRef) -> Outcome | None:
        """The named version is gone: its batch finished (events included), unless it was
        quarantined: then validate the quarantined copy again (a redrive)."""
        assert ref.version_id is not None  # locate() refuses a notification without one
        record = read_record(self.store, self.spec.name, batch_id(ref.version_id, None))
        copy = None if record is None else self.store.get_if_exists(record.quarantine_key)
        if record is None or copy is None:
            logger.info("already processed: the version is gone", extra={"key": ref.key})
            return None
        read_from = record.source.model_copy(update={"read_from": record.quarantine_key})
        source = SourceVersion(ref=read_from, batch=record.batch, data=copy.data)
        try:
            return self.apply(source, None)
        except FileFormatError as exc:
            logger.warning("still rejected: stays in quarantine", extra={"reason": str(exc)})
            return Outcome(MergeStatus.QUARANTINED, source, quarantine=record)

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _last_try(ref: ObjectRef) -> bool:
        """This delivery is the message's last before the DLQ (the redrive policy's count)."""
        return ref.receive_count >= MAX_RECEIVE_COUNT

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

    def _count(self, entry: LogEntry) -> None:
        counts = entry.counts
        for name, value in (
            ("InsertedRows", counts.inserted),
            ("UpdatedRows", counts.updated),
            ("UnchangedRows", counts.unchanged),
            ("LateRows", counts.late),
            ("DeletedRows", counts.deleted),
            ("HistoryRows", counts.history_rows),
        ):
            metrics.add_metric(name, MetricUnit.Count, value)

    def _fields(self, source: SourceVersion) -> dict[str, object]:
        return {"table": self.spec.name, "batch": source.batch, "key": source.key}
