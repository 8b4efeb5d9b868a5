"""Rich rendering of the operator commands' results (data comes from ops.status etc.)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ops.operations import DlqDepth, RedriveResult
from ops.status import StatusReport
from shared.timeline import RowVersion

if TYPE_CHECKING:
    from ops.query import QueryResult

STATUS_WIDTH = 140  # the status table's columns, unwrapped, even on a narrow terminal


def _wide(console: Console) -> Console:
    """The console, at least STATUS_WIDTH wide: tables stay unwrapped in a pipe or a README."""
    return Console(
        file=console.file,
        width=max(console.width, STATUS_WIDTH),
        force_terminal=console.is_terminal,
        no_color=console.no_color,
    )


def status(console: Console, report: StatusReport) -> None:
    if report.paused:
        since = f" since {report.paused_since.isoformat()}" if report.paused_since else ""
        console.print(f"[bold red]PAUSED[/]{since}: {report.pause_reason}", highlight=False)
    else:
        console.print("[bold green]running[/]: schedule enabled", highlight=False)
    console.print(
        f"bucket {report.bucket}, schedule rule {report.schedule_rule} "
        f"({'ENABLED' if report.schedule_enabled else 'DISABLED'})",
        highlight=False,
    )
    table = Table("table", "latest", "last batch", "batch time", "+new ~upd", "staging", "DLQ",
                  "quarantined", "hist objs", "hist rows")  # fmt: skip
    for name, t in report.tables.items():
        merged = counts = "-"
        if t.last_merge and t.last_merge.batch_time:
            merged = t.last_merge.batch_time.strftime("%Y-%m-%d %H:%M:%S")
        if t.last_merge and t.last_merge.counts:
            counts = f"+{t.last_merge.counts.inserted} ~{t.last_merge.counts.updated}"
        table.add_row(
            name,
            str(t.latest_rows),
            t.last_batch or "-",
            merged,
            counts,
            str(t.staging_pending),
            f"[red]{t.dlq_messages}[/]" if t.dlq_messages else "0",
            f"[red]{t.quarantined}[/]" if t.quarantined else "0",
            str(t.history_objects),
            str(t.history_rows),
        )
    _wide(console).print(table)
    if report.replication_slot is not None:
        slot = report.replication_slot
        colour = "red" if slot.at_risk else "green"
        console.print(f"[{colour}]{slot.describe()}[/]", highlight=False)
    for name, t in report.tables.items():
        for q in t.quarantine:
            mark = "dismissed" if q.dismissed else "quarantined"
            console.print(
                f"{name}: {mark} {q.key} ({q.problems} problem(s)): {q.first_error}",
                highlight=False,
            )


def redrive(console: Console, results: Sequence[RedriveResult]) -> None:
    for r in results:
        skipped = f", {r.skipped} already sent by an earlier run" if r.skipped else ""
        console.print(
            f"{r.pair.table}: moved {r.moved} message(s) from {r.pair.dlq_name} back to its "
            f"queue ({r.method}){skipped}",
            highlight=False,
        )


def redrive_plan(console: Console, depths: Sequence[DlqDepth]) -> None:
    for d in depths:
        held = f" ({d.in_flight} in flight)" if d.in_flight else ""
        console.print(f"{d.table}: would move {d.total} message(s){held}", highlight=False)


def versions(console: Console, versions: Sequence[RowVersion]) -> None:
    table = Table("op", "valid_from", "valid_to", "row")
    for v in versions:
        row = {k: val for k, val in v.row.items() if k not in ("created_at", "last_updated")}
        if v.deleted_at is not None:
            until = f"{v.deleted_at.isoformat(sep=' ')} (deleted)"
        else:
            until = v.valid_to.isoformat(sep=" ") if v.valid_to else "(current)"
        table.add_row(
            v.op or "-",
            v.valid_from.isoformat(sep=" "),
            until,
            ", ".join(f"{k}={val}" for k, val in row.items()),
        )
    _wide(console).print(table)


_NUMBERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "DECIMAL", "FLOAT", "DOUBLE"}


def query_result(console: Console, result: QueryResult) -> None:
    """`ingestctl query`: the rows as a table (NULL shown as such), numbers right-aligned."""
    from ops.query import cell_text  # DuckDB and pyarrow load for `query` alone

    table = Table(box=None, header_style="bold")
    for name, kind in zip(result.columns, result.types, strict=True):
        right = kind.split("(")[0].removeprefix("U") in _NUMBERS
        table.add_column(name, justify="right" if right else "left")
    for row in result.rows:
        table.add_row(*(escape(cell_text(v)) if v is not None else "[dim]NULL[/]" for v in row))
    _wide(console).print(table)
    count = len(result.rows)
    console.print(f"[dim]{count} row{'' if count == 1 else 's'}[/]", highlight=False)
