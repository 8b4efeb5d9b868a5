"""`ingestctl local demo`: the mission's story on a private local endpoint, in under a minute.

Baseline of every table promoted to latest; three 20-minute cycles of staging files (inserts,
updates, empty files); a bad file quarantined, its message in the DLQ, ingest paused; the
operator stages a corrected file, redrives and resumes; final counts and the events seen.
The merge and pause functions are the real ones, found by import path (`DEFAULT_HANDLERS`).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ops.local.dispatcher import AlarmChange, BusEvent, Invocation, Outcome
from ops.local.functions import (
    DEFAULT_HANDLERS,
    FunctionStartError,
    HandlerImportError,
    resolve_handler,
)
from ops.local.report import outcome_lines
from ops.local.runtime import LocalRuntime
from ops.operations import Operator, ResumeRefusedError
from ops.sample_data import Row, SampleDatabase
from shared.layout import (
    archive_prefix,
    baseline_key,
    history_prefix,
    quarantine_prefix,
    staging_key,
)
from shared.reader import read_latest
from shared.rows import decode_rows, dump_rows, row_json, validate_rows
from shared.schemas import RowModel
from shared.storage import BucketStore
from shared.tables import TABLES, get_table

STEP_TIMEOUT_SECONDS = 30.0
BAD_TABLE = "staff"


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
    with tempfile.TemporaryDirectory(prefix="ingest-demo-") as logs:
        runtime = LocalRuntime(journal, log_dir=Path(logs))
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
            _story(console, runtime, journal, seed)
        except DemoError as exc:
            console.print(f"[red]✗ {exc}[/]")
            console.print(f"function logs: {logs} (kept until the demo exits)")
            return 1
        finally:
            runtime.stop()
    console.print(f"[green]✓ done in {time.monotonic() - started:.0f}s[/]")
    return 0


def _story(console: Console, runtime: LocalRuntime, journal: _Journal, seed: int) -> None:
    store = BucketStore(runtime.bucket)
    operator = Operator(runtime.bucket, prefix=runtime.prefix)
    db = SampleDatabase(seed)

    console.rule("[bold]1. Baseline")
    for table in TABLES:
        _upload(store, baseline_key(table), table, db.rows(table))
    _wait(
        lambda: all(read_latest(store, get_table(t)).exists for t in TABLES),
        "every baseline promoted",
    )
    console.print(f"[green]✓[/] {len(TABLES)} baselines promoted to latest/")

    for cycle in range(1, 4):
        console.rule(f"[bold]2.{cycle} Ingest cycle {cycle} (+20 minutes)")
        changes = db.advance(minutes=20)
        for table in TABLES:
            _upload(store, staging_key(table), table, changes[table])
        _wait_staging_empty(store, list(TABLES))
        _cycle_table(console, changes, store)

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

    console.rule("[bold]4. The operator fixes it, redrives, resumes")
    _upload(store, staging_key(BAD_TABLE), BAD_TABLE, [staff])
    db.tables[BAD_TABLE][staff["staff_id"]] = staff
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


# -- helpers --------------------------------------------------------------------------------
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


def _object_rows(store: BucketStore, prefix: str) -> tuple[int, int]:
    keys = list(store.keys(prefix))
    rows = sum(len(decode_rows(store.get(k).data, k)) for k in keys)
    return len(keys), rows


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
        _, history_rows = _object_rows(store, history_prefix(name))
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
