"""One plain line per outcome, for `ingestctl local up` and for logs."""

from __future__ import annotations

from ops.local.dispatcher import (
    AlarmChange,
    BusEvent,
    DispatcherError,
    IngestRun,
    Invocation,
    Outcome,
)
from ops.local.lifecycle import LifecycleRun


def outcome_lines(outcome: Outcome) -> list[str]:
    if isinstance(outcome, DispatcherError):
        return [f"dispatcher-error thread={outcome.thread} error={outcome.error}"]
    if isinstance(outcome, Invocation):
        error = f" error={_last_line(outcome.error)}" if outcome.error else ""
        return [
            f"{outcome.kind} table={outcome.table} key={r.subject} message={r.message_id} "
            f"receive={r.receive_count} {'ok' if r.ok else 'failed'}{error}"
            for r in outcome.records
        ]
    if isinstance(outcome, IngestRun):
        if outcome.result is None:
            return [f"ingest rule={outcome.rule_state} skipped (ingest is paused)"]
        if not outcome.result.ok:
            return [f"ingest failed error={_last_line(outcome.result.error)}"]
        return [f"ingest ok {_ingest_summary(outcome.result.response)}"]
    if isinstance(outcome, LifecycleRun):
        return [
            f"lifecycle expired versions={outcome.versions} "
            f"delete_markers={outcome.delete_markers} bytes={outcome.bytes}"
        ]
    if isinstance(outcome, AlarmChange):
        line = (
            f"alarm table={outcome.table} name={outcome.alarm_name} state={outcome.state} "
            f"dlq_messages={outcome.dlq_messages}"
        )
        if outcome.pause is not None:
            line += " pause=" + (
                "ok" if outcome.pause.ok else f"failed error={_last_line(outcome.pause.error)}"
            )
        return [line]
    assert isinstance(outcome, BusEvent)
    event = outcome.event
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    table = detail.get("table", "-") if isinstance(detail, dict) else "-"
    return [
        f"event consumer={outcome.consumer} type={event.get('detail-type')} "
        f"source={event.get('source')} table={table}"
    ]


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _ingest_summary(value: object) -> str:
    """`table=action:rows` pairs from the ingest function's report."""
    tables = value.get("tables", []) if isinstance(value, dict) else []
    parts = [
        f"{t.get('table')}={t.get('action')}:{t.get('rows_written')}"
        for t in tables
        if isinstance(t, dict)
    ]
    paused = value.get("paused") if isinstance(value, dict) else None
    return f"paused={paused}" if paused else " ".join(parts)
