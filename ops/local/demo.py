"""`ingestctl local demo`: the mission's story on a private local endpoint, in under a minute.

Baseline of every table promoted to latest; three 20-minute cycles of staging files (inserts,
updates, empty files; in cycle 2 an order's delivery location changes); a bad file
quarantined, its message in the DLQ, ingest paused; the operator stages a corrected file,
redrives and resumes; final counts and the events seen; the warehouse the transform kept
(row counts per table, and the changed order's two fact rows). The merge, pause and transform
functions are the real ones, found by import path (`DEFAULT_HANDLERS`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pg8000.native
from rich.console import Console
from rich.table import Table

from ops.local.dispatcher import AlarmChange, BusEvent, DispatcherConfig, Invocation, Outcome
from ops.local.functions import (
    DEFAULT_HANDLERS,
    FunctionStartError,
    HandlerImportError,
    resolve_handler,
)
from ops.local.report import outcome_lines
from ops.local.runtime import LocalRuntime
from ops.operations import Operator, ResumeRefusedError
from ops.pg import LocalPostgres, PostgresUnavailableError, connect, create_schema, upsert_rows
from ops.sample_data import Row, SampleDatabase
from shared.layout import (
    archive_prefix,
    baseline_key,
    history_prefix,
    quarantine_prefix,
    staging_key,
)
from shared.reader import iter_history, read_latest
from shared.rows import dump_rows, row_json, validate_rows
from shared.schemas import RowModel
from shared.storage import BucketStore
from shared.tables import TABLES, get_table

STEP_TIMEOUT_SECONDS = 30.0
BAD_TABLE = "staff"
CHANGED_ORDER_CYCLE = 2


class DemoError(Exception):
    """A step did not reach the state the story needs."""


class _Journal:
    """What the runtime reported, collected from its threads."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.alarms: list[AlarmChange] = []
        self.failed_merges = 0

    def __call__(self, outcome: Outcome) -> None:
        with self.lock:
            if isinstance(outcome, BusEvent):
                if outcome.consumer == "operator":  # it sees every event; count them once
                    self.events.append(outcome.event)
                return
            if isinstance(outcome, AlarmChange):
                self.alarms.append(outcome)
            elif isinstance(outcome, Invocation):
                if all(r.ok for r in outcome.records) and outcome.error is None:
                    return
                self.failed_merges += 1
        for line in outcome_lines(outcome):
            self.console.print(f"  [dim]runtime:[/] {line}", highlight=False)


def run_demo(console: Console, *, seed: int = 7) -> int:
    try:
        for path in DEFAULT_HANDLERS.values():
            resolve_handler(path)
    except HandlerImportError as exc:
        console.print(
            f"[red]The demo needs the Lambda handlers, and one is missing:[/] {exc}\n"
            "It runs once the merge function (services/merge/handler.py) is in this checkout."
        )
        return 3
    started = time.monotonic()
    journal = _Journal(console)
    db = SampleDatabase(seed)
    with (
        tempfile.TemporaryDirectory(prefix="ingest-demo-") as logs,
        _start_source(console, db) as source,
    ):
        config = DispatcherConfig(
            log_dir=Path(logs),
            ingest_source=source.url if source else None,
            ingest_log_tables=LOG_TABLES if source and source.log_mode else (),
            ingest_every_seconds=None,  # the story fires the schedule itself, step by step
        )
        runtime = LocalRuntime(journal, config=config)
        console.rule("[bold]Local AWS")
        try:
            runtime.start()
        except FunctionStartError as exc:
            console.print(f"[red]A Lambda function did not start:[/] {exc} (logs in {logs})")
            return 3
        console.print(
            f"moto's server at {runtime.endpoint_url}, bucket {runtime.bucket}; "
            f"a queue, DLQ, alarm and merge function per table ({len(TABLES)} tables); "
            f"function logs in {logs}",
            highlight=False,
        )
        try:
            _story(console, runtime, journal, db, source)
        except DemoError as exc:
            console.print(f"[red]✗ {exc}[/]")
            console.print(f"function logs: {logs} (kept until the demo exits)")
            return 1
        finally:
            runtime.stop()
    console.print(f"[green]✓ done in {time.monotonic() - started:.0f}s[/]")
    return 0


def _story(
    console: Console,
    runtime: LocalRuntime,
    journal: _Journal,
    db: SampleDatabase,
    source: _Source | None,
) -> None:
    store = BucketStore(runtime.bucket)
    operator = Operator(runtime.bucket, prefix=runtime.prefix)
    dispatcher = runtime.dispatcher
    assert dispatcher is not None

    def ingest(changes: dict[str, list[Row]], area: str) -> None:
        """The ingest function reads PostgreSQL; without one, upload what it would write."""
        if source is None:
            key = baseline_key if area == "baseline" else staging_key
            for table in TABLES:
                _upload(store, key(table), table, changes[table])
            return
        source.apply(changes)
        run = dispatcher.run_ingest_now()
        if run.result is None or not run.result.ok:
            error = run.result.error if run.result else f"schedule rule {run.rule_state}"
            raise DemoError(f"the ingest function failed: {error}")
        console.print(f"[green]✓[/] ingest function read PostgreSQL, wrote {area}/ files")

    console.rule("[bold]1. Baseline")
    ingest(db.snapshot(), "baseline")
    _wait(
        lambda: all(read_latest(store, get_table(t)).exists for t in TABLES),
        "every baseline promoted",
    )
    console.print(f"[green]✓[/] {len(TABLES)} baselines promoted to latest/")

    for cycle in range(1, 4):
        console.rule(f"[bold]2.{cycle} Ingest cycle {cycle} (+20 minutes)")
        changes = db.advance(minutes=20)
        if cycle == CHANGED_ORDER_CYCLE:
            _move_delivery(console, db, changes)
        ingest(changes, "staging")
        _wait_staging_empty(store, list(TABLES))
        _cycle_table(console, changes, store)

    if source is not None and source.log_mode:
        console.rule("[bold]2.4 Log mode: every version and every delete (sales_order)")
        edited, deleted = _edit_twice_and_delete(console, db, source)
        ingest({}, "staging")
        _wait_staging_empty(store, list(TABLES))
        _show_log_catch(console, store, edited, deleted)
    elif source is not None:
        console.print(
            "[yellow]![/] no wal2json for this PostgreSQL: every table polled (log mode needs "
            "the plugin: Debian's postgresql-15-wal2json)"
        )

    console.rule("[bold]3. A bad file")
    staff = db.rows(BAD_TABLE)[2]
    staff["email_address"] = "j.franey@terrifictotes.example"
    staff["last_updated"] = db.now + timedelta(minutes=1)
    bad = {**_jsonable(staff), "shoe_size": 9}
    store.put(staging_key(BAD_TABLE), json.dumps([bad]).encode())
    console.print(f"uploaded staging/{BAD_TABLE}.json with an unknown column (shoe_size)")
    _wait(lambda: _dlq_depth(operator, BAD_TABLE) > 0, f"the bad {BAD_TABLE} message in its DLQ")
    _wait(lambda: _paused(operator), "ingest paused by the DLQ alarm")
    quarantined = sorted(store.keys(quarantine_prefix(BAD_TABLE)))
    console.print(f"[green]✓[/] quarantined: {', '.join(quarantined) or '(nothing!)'}")
    record = operator.pause_state()
    assert record is not None
    for reason in record.reasons:
        console.print(f"[green]✓[/] paused: {reason.cause} (table {reason.table})")
    console.print(f"[green]✓[/] schedule rule {operator.schedule_rule}: {_rule_state(operator)}")
    if not quarantined:
        raise DemoError("the bad file is in no quarantine/ key")
    if source is not None:
        skipped = dispatcher.run_ingest_now()
        if skipped.result is not None:
            raise DemoError("the ingest ran although the schedule rule is disabled")
        console.print("[green]✓[/] the schedule fires nothing while ingest is paused")

    console.rule("[bold]4. The operator fixes it, redrives, resumes")
    _upload(store, staging_key(BAD_TABLE), BAD_TABLE, [staff])
    db.tables[BAD_TABLE][staff["staff_id"]] = staff
    if source is not None:  # the same correction in the source, so ingest agrees with it
        source.apply({BAD_TABLE: [staff]})
    _wait(lambda: _latest_matches(store, db, BAD_TABLE), "the corrected staff row in latest")
    console.print("[green]✓[/] corrected staging/staff.json merged")
    for result in operator.redrive(operator.queue_pairs([BAD_TABLE])):
        console.print(
            f"[green]✓[/] redrive {result.pair.dlq_name} → {result.pair.table} queue: "
            f"{result.moved} moved ({result.method})"
        )
    _wait(lambda: _queue_settled(operator, BAD_TABLE), "the redriven message handled")
    try:
        operator.resume()
        console.print("[green]✓[/] resumed: the DLQs are empty")
    except ResumeRefusedError as refused:
        # The redriven message names the bad version: validated again from quarantine, its
        # data is still bad, so it is back in the DLQ. The corrected file has merged already.
        # Resume only once the alarm has settled in ALARM and its pause call has returned,
        # so a late pause cannot undo the resume.
        _wait(lambda: _alarm_settled(runtime, journal), "the alarm for the re-rejected message")
        console.print(f"[yellow]![/] {refused}")
        console.print(
            "  the redriven message names the bad version, still bad in quarantine; the "
            "corrected file has merged, so the operator resumes with force"
        )
        operator.resume(force=True)
    console.print(f"[green]✓[/] schedule rule {operator.schedule_rule}: {_rule_state(operator)}")
    if source is not None:
        ingest(db.advance(minutes=20), "staging")
        _wait_staging_empty(store, list(TABLES))
        console.print("[green]✓[/] the next scheduled ingest merged as usual")

    console.rule("[bold]5. Final state")
    _final_table(console, store, db)
    seen = Counter(str(e.get("detail-type")) for e in journal.events)
    console.print(
        "events seen by the operator consumer: "
        + ", ".join(f"{kind}: {count}" for kind, count in sorted(seen.items())),
        highlight=False,
    )
    mismatched = [t for t in TABLES if not _latest_matches(store, db, t)]
    if mismatched:
        raise DemoError(f"latest differs from the database for {', '.join(mismatched)}")
    console.print("[green]✓[/] latest/ equals the source database, table by table")

    console.rule("[bold]6. The warehouse (transform)")
    _show_warehouse(console, store, db)

    console.rule("[bold]7. Query the data (ingestctl query: DuckDB, the tables Athena sees)")
    _query_versions(console, store, db)


# -- the source database --------------------------------------------------------------------
class _Source:
    """The demo's PostgreSQL: loaded with the sample baseline, changed as the business would."""

    def __init__(self, server: LocalPostgres) -> None:
        self.server = server
        self.url = server.url()
        self.conn = connect(server.credentials())
        self.log_mode = server.has_wal2json

    def apply(self, changes: dict[str, list[Row]]) -> None:
        for table, rows in changes.items():
            upsert_rows(self.conn, get_table(table), rows)

    def delete(self, table: str, key: int) -> None:
        spec = get_table(table)
        ident = pg8000.native.identifier
        self.conn.run(f"DELETE FROM {ident(table)} WHERE {ident(spec.primary_key)} = :key", key=key)


def _edit_twice_and_delete(
    console: Console, db: SampleDatabase, source: _Source
) -> tuple[int, int]:
    """Inside one cycle: an order edited twice (two commits), another order deleted."""
    orders = sorted(db.tables["sales_order"])
    edited, deleted = orders[1], orders[2]
    order = db.tables["sales_order"][edited]
    for step in (1, 2):
        order["units_sold"] = int(order["units_sold"]) + 1
        order["last_updated"] = db.now + timedelta(minutes=step)
        source.apply({"sales_order": [order]})
        console.print(f"order {edited}: units_sold → {order['units_sold']}", highlight=False)
    source.delete("sales_order", deleted)
    del db.tables["sales_order"][deleted]
    console.print(f"order {deleted}: deleted", highlight=False)
    return edited, deleted


def _show_log_catch(console: Console, store: BucketStore, edited: int, deleted: int) -> None:
    spec = get_table("sales_order")
    history = [row for _, rows in iter_history(store, spec) for row in rows]
    mine = [h for h in history if h.row.model_dump()["sales_order_id"] in (edited, deleted)]
    table = Table("sales_order_id", "units_sold", "op", "deleted at", box=None)
    for h in mine:
        values = h.row.model_dump()
        table.add_row(
            str(values["sales_order_id"]),
            str(values["units_sold"]),
            h.change.op.value if h.change else "-",
            str(h.deleted_at or ""),
        )
    console.print("history of the two orders:")
    console.print(table)
    if not any(h.deleted for h in mine):
        raise DemoError(f"order {deleted}'s delete did not reach history")
    in_latest = {r.model_dump()["sales_order_id"] for r in _latest_rows(store, "sales_order")}
    if deleted in in_latest:
        raise DemoError(f"order {deleted} is still in latest")
    console.print(
        f"[green]✓[/] both edits of order {edited} are versions (polling would have staged only "
        f"the last); order {deleted} left latest and its last row is in history, marked "
        "deleted (polling would never have seen it)"
    )


@contextlib.contextmanager
def _start_source(console: Console, db: SampleDatabase) -> Iterator[_Source | None]:
    """A PostgreSQL of our own where the binaries exist; else None (simulated uploads)."""
    with tempfile.TemporaryDirectory(prefix="ingest-demo-pg-") as folder:
        try:
            server = LocalPostgres(Path(folder))
            server.start()
        except (PostgresUnavailableError, RuntimeError) as exc:
            console.print(f"[yellow]![/] no PostgreSQL here ({exc}); uploading what ingest would")
            yield None
            return
        try:
            source = _Source(server)
            create_schema(source.conn)
            console.print(f"PostgreSQL at {server.url().rsplit('@', 1)[-1]}: the source database")
            yield source
            source.conn.close()
        finally:
            server.stop()


# -- helpers --------------------------------------------------------------------------------
LOG_TABLES = ("sales_order",)  # captured from the log where the demo's PostgreSQL can


def _changed_order(db: SampleDatabase) -> int:
    return min(db.tables["sales_order"])


def _move_delivery(console: Console, db: SampleDatabase, changes: dict[str, list[Row]]) -> None:
    """The sales team changes an order's delivery location: a new version of the order."""
    order = db.tables["sales_order"][_changed_order(db)]
    before = order["agreed_delivery_location_id"]
    addresses = sorted(db.tables["address"])
    order["agreed_delivery_location_id"] = next(a for a in addresses if a != before)
    order["last_updated"] = db.now
    changes["sales_order"] = [
        *(r for r in changes["sales_order"] if r["sales_order_id"] != order["sales_order_id"]),
        order,
    ]
    console.print(
        f"order {order['sales_order_id']}: delivery location {before} → "
        f"{order['agreed_delivery_location_id']}",
        highlight=False,
    )


def _show_warehouse(console: Console, store: BucketStore, db: SampleDatabase) -> None:
    from services.transform.service import TransformService
    from services.transform.warehouse import FACT_SALES_ORDER, WAREHOUSE_TABLES

    service = TransformService(store)
    order = _changed_order(db)
    # A fact row for every version of every order: latest's and history's (a deleted
    # order's last row is in history: it keeps its facts).
    expected = len(_latest_rows(store, "sales_order")) + _history_rows(store, "sales_order")

    def caught_up() -> bool:
        return len(service.read_table(FACT_SALES_ORDER.name)) == expected

    try:
        _wait(caught_up, f"{expected} sales fact rows (every version of every order)")
    except DemoError as exc:
        found = len(service.read_table(FACT_SALES_ORDER.name))
        raise DemoError(f"{exc}; the warehouse holds {found}") from None
    table = Table("warehouse table", "rows", box=None)
    for name in WAREHOUSE_TABLES:
        table.add_row(name, str(len(service.read_table(name))))
    console.print(table)
    versions = [
        r for r in service.read_table(FACT_SALES_ORDER.name) if r["sales_order_id"] == order
    ]
    facts = Table(
        "sales_record_id", "sales_order_id", "last_updated", "delivery location", box=None
    )
    for row in versions:
        facts.add_row(
            str(row["sales_record_id"]),
            str(row["sales_order_id"]),
            f"{row['last_updated_date']} {row['last_updated_time']}",
            str(row["agreed_delivery_location_id"]),
        )
    console.print(f"order {order} in fact_sales_order: one row per version")
    console.print(facts)
    if len(versions) != 2:
        raise DemoError(f"order {order} has {len(versions)} fact rows, expected 2")
    console.print("[green]✓[/] the warehouse holds every version of the changed order")


def versions_sql(order: int) -> str:
    """The demo's closing query: every version of the changed order, from its change table."""
    return (
        "SELECT sales_order_id, version, agreed_delivery_location_id, units_sold, valid_from, "
        f"valid_to, operation FROM changes_sales_order WHERE sales_order_id = {order} "
        "ORDER BY version"
    )


def _query_versions(console: Console, store: BucketStore, db: SampleDatabase) -> None:
    """The changed order's versions through `ingestctl query`'s own code; then the objects a
    query reads kept in .demo/bucket, where the same query runs after the demo has ended."""
    from ops import render
    from ops.query import run_query
    from ops.snapshot import DEMO_SNAPSHOT, copy_objects

    sql = versions_sql(_changed_order(db))
    _wait(
        lambda: len(run_query(store, sql).rows) >= 2,
        "the changed order's versions in changes_sales_order",
    )
    console.print(f"[bold]ingestctl query[/] {json.dumps(sql)}", highlight=False)
    result = run_query(store, sql)
    render.query_result(console, result)
    if len(result.rows) != 2:
        raise DemoError(f"order {_changed_order(db)} has {len(result.rows)} versions, expected 2")
    copied = copy_objects(store, DEMO_SNAPSHOT)
    console.print(
        f"[green]✓[/] kept latest/ and warehouse/ ({copied} objects) in {DEMO_SNAPSHOT}/; "
        "query them after the demo:",
        highlight=False,
    )
    console.print(
        f"  .venv/bin/ingestctl query --snapshot {DEMO_SNAPSHOT} {json.dumps(sql)}",
        highlight=False,
        soft_wrap=True,
    )


def _jsonable(row: Row) -> dict[str, Any]:
    spec = get_table(BAD_TABLE)
    report = validate_rows(spec, [row], "demo")
    return dict(json.loads(row_json(spec, report.rows[0])))


def _upload(store: BucketStore, key: str, table: str, rows: list[Row]) -> None:
    spec = get_table(table)
    report = validate_rows(spec, rows, key)
    if not report.ok:  # the generator is ours: a failure here is a bug
        raise DemoError("\n".join(str(p) for p in report.problems))
    store.put(key, dump_rows(spec, report.rows))


def _wait(predicate: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def _wait_staging_empty(store: BucketStore, tables: list[str]) -> None:
    _wait(
        lambda: not any(store.versions(staging_key(t)) for t in tables),
        "every staging file merged (no staging version left)",
    )


def _latest_rows(store: BucketStore, table: str) -> list[RowModel]:
    return read_latest(store, get_table(table)).rows


def _latest_matches(store: BucketStore, db: SampleDatabase, table: str) -> bool:
    spec = get_table(table)
    source = validate_rows(spec, db.rows(table), "database")
    latest = _latest_rows(store, table)
    return {row_json(spec, r) for r in latest} == {row_json(spec, r) for r in source.rows}


def _history_rows(store: BucketStore, table: str) -> int:
    return sum(len(rows) for _, rows in iter_history(store, get_table(table)))


def _cycle_table(console: Console, changes: dict[str, list[Row]], store: BucketStore) -> None:
    table = Table("table", "staged rows", "latest rows", "history objects", box=None)
    for name in TABLES:
        table.add_row(
            name,
            str(len(changes[name])) if changes[name] else "[dim]0 (empty file)[/]",
            str(len(_latest_rows(store, name))),
            str(len(list(store.keys(history_prefix(name))))),
        )
    console.print(table)


def _final_table(console: Console, store: BucketStore, db: SampleDatabase) -> None:
    table = Table(
        "table", "latest rows", "history rows", "archive files", "database rows", box=None
    )
    for name in TABLES:
        history_rows = _history_rows(store, name)
        table.add_row(
            name,
            str(len(_latest_rows(store, name))),
            str(history_rows),
            str(len(list(store.keys(archive_prefix(name))))),
            str(len(db.rows(name))),
        )
    console.print(table)


def _alarm_settled(runtime: LocalRuntime, journal: _Journal) -> bool:
    assert runtime.dispatcher is not None
    with journal.lock:
        reported = [a.state for a in journal.alarms if a.table == BAD_TABLE]
    in_alarm = runtime.dispatcher.alarm_states[BAD_TABLE] == "ALARM"
    return in_alarm and bool(reported) and reported[-1] == "ALARM"


def _dlq_depth(operator: Operator, table: str) -> int:
    return sum(d.total for d in operator.dlq_depths() if d.table == table)


def _queue_settled(operator: Operator, table: str) -> bool:
    pair = operator.queue_pairs([table])[0]
    attributes = operator.sqs.get_queue_attributes(
        QueueUrl=pair.source_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values()) == 0


def _paused(operator: Operator) -> bool:
    record = operator.pause_state()
    return record is not None and record.paused and _rule_state(operator) == "DISABLED"


def _rule_state(operator: Operator) -> str:
    return operator.events.describe_rule(Name=operator.schedule_rule)["State"]
