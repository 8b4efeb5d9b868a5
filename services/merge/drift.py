"""A batch whose rows hold columns the table's model does not name: the table's schema policy.

- `stop`: the batch stays rejected (its rows' problems say "unknown column"): quarantined,
  with the columns named in its report, until the registry names them and it is redriven;
- `add_nullable`: validated again with the columns added (nullable); if every row passes, the
  columns are recorded in the table's schema state (shared/schema_state.py) before the batch
  commits, so no reader meets a committed column it was not told of. A column name the
  policy cannot add (shared.schema_state.ADDABLE_NAME) stays a problem of its rows.
A `SchemaDrift` event says what was found and done, either way, before anything is written: a
crash after it repeats it (the same event id), never loses it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.merge.source import SourceVersion
from services.merge.staged import StagedReport, load_staged
from shared.events import EventSink, SchemaDrift
from shared.schema_state import ADDABLE_NAME, add_columns, with_columns
from shared.storage import ObjectStore
from shared.tables import TableSpec


@dataclass(frozen=True)
class Drifted:
    """The spec to merge the batch with, and its rows validated with it."""

    spec: TableSpec
    report: StagedReport


def apply_policy(
    store: ObjectStore,
    events: EventSink,
    spec: TableSpec,
    source: SourceVersion,
    report: StagedReport,
) -> Drifted:
    """`report` holds columns `spec` does not name: what the table's policy makes of them."""
    if spec.schema_policy == "stop":
        _announce(events, spec, source, report, "stopped")
        return Drifted(spec, report)
    addable = [name for name in report.new_columns if ADDABLE_NAME.fullmatch(name)]
    extended = with_columns(spec, addable)
    again = replace(_validate(extended, source), new_columns=report.new_columns)
    if again.problems:
        _announce(events, spec, source, report, "stopped")
        return Drifted(extended, again)
    _announce(events, spec, source, report, "added")
    recorded = add_columns(store, spec, addable, source.batch, source.observed.at)
    if recorded.row_model is not extended.row_model:  # another batch added a column meanwhile
        return Drifted(recorded, _validate(recorded, source))
    return Drifted(extended, again)


def _validate(spec: TableSpec, source: SourceVersion) -> StagedReport:
    return load_staged(spec, source.data, source.key, source.observed)


def _announce(
    events: EventSink,
    spec: TableSpec,
    source: SourceVersion,
    report: StagedReport,
    action: str,
) -> None:
    events.publish(
        [
            SchemaDrift.for_batch(
                table=spec.name,
                batch=source.batch,
                source_key=source.key,
                source_version=source.ref.version_id,
                columns=list(report.new_columns),
                policy=spec.schema_policy,
                action=action,
            )
        ]
    )
