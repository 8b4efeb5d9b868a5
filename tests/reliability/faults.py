"""Seeded random scenarios: random table, version histories and batch splits, delivered 1-3
times in random order, with a crash, a throttle or a race injected into deliveries; then every
batch is replayed and the bucket must not change.

Built on the moto pipeline of the merge's own tests (`tests/integration/merge_pipeline.py`):
the real handler, the real service, moto's S3 (versioned), SQS and EventBridge.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
from moto import mock_aws
from moto.s3.responses import S3Response

from ops.sample_data import SampleDatabase
from services.merge import handler as merge_handler
from services.merge.service import MergeService
from shared.layout import baseline_key, staging_key
from shared.naming import MERGE_FUNCTION_TIMEOUT_SECONDS
from shared.rows import dump_rows, validate_rows
from shared.tables import TABLES, TableSpec
from tests.integration.merge_pipeline import (
    BUCKET,
    REGION,
    LambdaContext,
    Pipeline,
    naming_version,
    s3_answer,
)
from tests.reliability.oracle import (
    Comparison,
    changed_keys,
    compare,
    expect,
    object_versions,
    read_table,
)

# Crash points walked in turn across the suite: the adapters' Nth call (reads count too),
# before or after it happened. An uninterrupted merge makes about 20 calls.
CRASH_CALLS = 24
CRASH_POINTS = [(n, after) for after in (False, True) for n in range(1, CRASH_CALLS + 1)]
MAX_ATTEMPTS = 25  # deliveries of one message before the scenario counts it stuck


@dataclass
class FaultTally:
    scenarios: int = 0
    scenarios_ok: int = 0
    files: int = 0
    deliveries: int = 0
    crashes: int = 0
    crashes_survived: int = 0
    crash_points: set[tuple[int, bool]] = field(default_factory=set)
    throttles: int = 0  # S3 503 SlowDown answered to one request (botocore retries it)
    throttles_survived: int = 0
    partial_events: int = 0  # PutEvents with FailedEntryCount > 0 (the publisher resends)
    partial_events_survived: int = 0
    races: int = 0  # two merges of one table at once, in threads
    races_survived: int = 0
    overwritten: int = 0  # staging versions overwritten by a newer one before their merge
    rows: Comparison = field(default_factory=Comparison)
    changed_by_replay: int = 0
    new_event_ids_on_replay: int = 0
    stuck: int = 0
    crash_cursor: int = 0  # the next crash point to try, walked in turn
    failures: list[str] = field(default_factory=list)


@dataclass
class _Injected:
    crashes: int = 0
    throttles: int = 0
    partial_events: int = 0
    races: int = 0


# ---- random data ---------------------------------------------------------------------------


def _text_column(spec: TableSpec, row: dict[str, Any]) -> str | None:
    for column in spec.columns:
        if column != spec.primary_key and isinstance(row.get(column), str):
            if column.endswith("_date"):
                continue
            return column
    return None


def random_files(rng: random.Random, table: str) -> list[bytes]:
    """Distinct versions of a few rows (distinct `last_updated` per key), split over files:
    versions may repeat across files and inside one; files may be empty."""
    spec = TABLES[table]
    sample = SampleDatabase(rng.randrange(1 << 30), orders=8, designs=6).rows(table)
    chosen = rng.sample(sample, k=min(len(sample), rng.randint(1, 6)))
    versions = []
    for row in chosen:
        text = _text_column(spec, row)
        for minutes in rng.sample(range(1, 900), rng.randint(1, 4)):
            version = dict(row, last_updated=row["last_updated"] + timedelta(minutes=minutes))
            if text:
                version[text] = f"{row[text][:40]} v{minutes}"
            versions.append(version)
    report = validate_rows(spec, versions, f"scenario {table}")
    assert report.ok, report.problems
    models = report.rows
    files = [
        rng.choices(models, k=rng.randint(0, 6)) if models else [] for _ in range(rng.randint(1, 5))
    ]
    staged = {id(m) for f in files for m in f}
    files.append([m for m in models if id(m) not in staged])
    rng.shuffle(files)
    return [dump_rows(spec, f) for f in files]


# ---- injected faults -----------------------------------------------------------------------


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def throttled_s3(request_number: int) -> tuple[Any, list[int]]:
    """An S3 client whose Nth request is answered 503 SlowDown once (botocore retries it)."""
    client = boto3.client("s3", region_name=REGION)
    seen = [0]
    fired: list[int] = []

    def slow_down(request: Any, **_: Any) -> Any:
        seen[0] += 1
        if seen[0] == request_number:
            fired.append(seen[0])
            return s3_answer(request, 503, _SLOW_DOWN)
        return None

    client.meta.events.register_first("before-send.s3", slow_down)
    return client, fired


class PartlyFailingEvents:
    """An EventBridge client whose first PutEvents refuses its last entry (FailedEntryCount 1),
    as EventBridge does under throttling; the entry is not sent, the publisher must resend."""

    def __init__(self) -> None:
        self.client = boto3.client("events", region_name=REGION)
        self.refused = 0

    def put_events(self, Entries: list[Any]) -> dict[str, Any]:
        if self.refused or not Entries:
            return dict(self.client.put_events(Entries=Entries))
        self.refused += 1
        sent: dict[str, Any] = {}
        if len(Entries) > 1:
            sent = dict(self.client.put_events(Entries=Entries[:-1]))
        results = list(sent.get("Entries", []))
        results.append({"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"})
        return {"FailedEntryCount": 1 + int(sent.get("FailedEntryCount", 0)), "Entries": results}


@contextlib.contextmanager
def atomic_conditional_puts() -> Iterator[None]:
    """moto checks If-Match / If-None-Match and then writes, with other work between: two
    threads can both pass the check. S3 decides a conditional write atomically, so the races
    here run against a moto whose PutObject is serialised (else they test moto, not the merge).
    """
    original = S3Response.put_object
    lock = threading.Lock()

    def put_object(self: S3Response) -> Any:
        with lock:
            return original(self)

    S3Response.put_object = put_object  # type: ignore[method-assign]
    try:
        yield
    finally:
        S3Response.put_object = original  # type: ignore[method-assign]


# ---- one scenario --------------------------------------------------------------------------


class Scenario:
    def __init__(self, number: int, seed: int, tally: FaultTally, fault_rate: float) -> None:
        self.rng = random.Random(f"{seed}:{number}")
        self.number = number
        self.tally = tally
        self.fault_rate = fault_rate
        self.table = self.rng.choice(sorted(TABLES))
        # AWS's notifications name the object version; moto's do not (the merge then finds
        # the version by its ETag): odd scenarios get the AWS shape
        self.names_versions = number % 2 == 1
        self.injected = _Injected()
        self.problems: list[str] = []

    def run(self) -> None:
        with mock_aws(), atomic_conditional_puts():
            self.pipeline = Pipeline(self.table, lease_seconds=0)
            self._drain()  # S3's test event
            try:
                self._run()
            finally:
                merge_handler.use_service(None)

    def _run(self) -> None:
        pipeline, rng = self.pipeline, self.rng
        files = random_files(rng, self.table)
        baseline_at = rng.randrange(len(files)) if rng.random() < 0.4 else None
        self.tally.files += len(files)
        bodies: list[str] = []
        waiting: list[str] = []
        for index, data in enumerate(files):
            key = baseline_key(self.table) if index == baseline_at else staging_key(self.table)
            put = pipeline.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            fresh = self._drain()
            if self.names_versions:
                fresh = [naming_version(body, put["VersionId"]) for body in fresh]
            bodies += fresh
            waiting += fresh
            if rng.random() < 0.5:  # deliver now; otherwise the key may be overwritten first
                self.tally.overwritten += max(0, len(waiting) - 1)
                self._deliver_all(waiting)
                waiting = []
        self.tally.overwritten += max(0, len(waiting) - 1)
        self._deliver_all(waiting)

        latest, history = read_table(pipeline.s3, BUCKET, self.table)
        rows = compare(expect(pipeline.spec.primary_key, files), latest, history)
        self.tally.rows.add(rows)
        if not rows.ok:
            self.problems += rows.details[:5]
        if pipeline.staging_versions():
            self.problems.append("staging versions left behind")
        if dlq := pipeline.dlq_bodies():
            self.problems.append(f"{len(dlq)} message(s) in the DLQ")

        before, ids_before = object_versions(pipeline.s3, BUCKET), set(pipeline.event_ids())
        healthy = pipeline.faulty_service()
        for body in bodies:  # replay every batch once more, after everything is done
            if not self._deliver([body], healthy):
                self.problems.append("a replayed message failed")
        changed = changed_keys(before, object_versions(pipeline.s3, BUCKET))
        new_ids = set(pipeline.event_ids()) - ids_before
        self.tally.changed_by_replay += len(changed)
        self.tally.new_event_ids_on_replay += len(new_ids)
        if changed or new_ids:
            self.problems.append(f"replay changed {changed[:5]}, new events {sorted(new_ids)[:5]}")

    # ---- delivery --------------------------------------------------------------------------

    def _drain(self) -> list[str]:
        """Take the notifications S3 queued (bodies only; this scenario schedules delivery)."""
        bodies = []
        while messages := self.pipeline.receive():
            for m in messages:
                self.pipeline.sqs.delete_message(
                    QueueUrl=self.pipeline.queue_url, ReceiptHandle=m["ReceiptHandle"]
                )
                if '"Records"' in m["Body"]:
                    bodies.append(m["Body"])
        return bodies

    def _deliver_all(self, bodies: list[str]) -> None:
        """Each message 1-3 times, in random order; a failed delivery is redelivered later."""
        rng = self.rng
        pending = [b for b in bodies for _ in range(rng.randint(1, 3))]
        rng.shuffle(pending)
        attempts: Counter[str] = Counter()
        while pending:
            if len(pending) > 1 and rng.random() < self.fault_rate / 3:
                pair = [pending.pop(rng.randrange(len(pending))) for _ in range(2)]
                failed = self._race(pair)
            else:
                body = pending.pop(rng.randrange(len(pending)))
                failed = [] if self._deliver_with_fault(body) else [body]
            for body in failed:
                attempts[body] += 1
                if attempts[body] >= MAX_ATTEMPTS:
                    self.tally.stuck += 1
                    self.problems.append(f"a message failed {MAX_ATTEMPTS} times")
                    continue
                pending.insert(rng.randrange(len(pending) + 1), body)

    def _deliver_with_fault(self, body: str) -> bool:
        pipeline, rng, tally = self.pipeline, self.rng, self.tally
        if rng.random() >= self.fault_rate:
            return self._deliver([body], pipeline.faulty_service())
        kind = rng.choices(["crash", "throttle", "events"], weights=[6, 1, 1])[0]
        if kind == "crash":
            point = CRASH_POINTS[tally.crash_cursor % len(CRASH_POINTS)]
            tally.crash_cursor += 1
            service = pipeline.faulty_service(*point, count_reads=True)
            ok = self._deliver([body], service)
            store: Any = service.store
            if len(store.writes) >= point[0]:
                self.injected.crashes += 1
                tally.crash_points.add(point)
                if ok:
                    self.problems.append(f"a crash at call {point} did not fail the record")
            return ok
        if kind == "throttle":
            s3, fired = throttled_s3(rng.randint(1, 12))
            ok = self._deliver([body], pipeline.faulty_service(s3=s3))
            self.injected.throttles += len(fired)
            if fired and not ok:
                self.problems.append("a throttled request was not retried")
            return ok
        events = PartlyFailingEvents()
        ok = self._deliver([body], pipeline.faulty_service(events=events))
        self.injected.partial_events += events.refused
        if events.refused and not ok:
            self.problems.append("a partly refused PutEvents was not resent")
        return ok

    def _deliver(self, bodies: list[str], service: MergeService) -> bool:
        """One Lambda invocation with these messages, through SQS; True if all succeeded."""
        pipeline = self.pipeline
        for body in bodies:
            pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=body)
        messages: list[dict[str, Any]] = []
        while len(messages) < len(bodies) and (got := pipeline.receive()):
            messages += got
        self.tally.deliveries += len(messages)
        merge_handler.use_service(service)
        try:
            response = merge_handler.handler(pipeline.lambda_event(messages), LambdaContext())
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        except Exception:  # every record failed: Powertools raises BatchProcessingError
            failed = {m["MessageId"] for m in messages}
        finally:
            merge_handler.use_service(None)
        for m in messages:
            pipeline.sqs.delete_message(
                QueueUrl=pipeline.queue_url, ReceiptHandle=m["ReceiptHandle"]
            )
        return not failed

    def _race(self, bodies: list[str]) -> list[str]:
        """Two merges of this table at once, in threads, each with its own clients.

        They run with the production lease: the scenario's lease of 0 stands for "the
        crashed invocation is long dead", which two live twins of one batch are not (on AWS
        a batch is only taken over after the function's timeout has killed its first taker).
        """
        self.injected.races += 1
        pipeline = self.pipeline
        refs = [pipeline.ref({"Body": body}) for body in bodies]
        services = [
            pipeline.faulty_service(
                s3=boto3.client("s3", region_name=REGION),
                events=boto3.client("events", region_name=REGION),
                sqs=boto3.client("sqs", region_name=REGION),
            )
            for _ in bodies
        ]
        for service in services:
            service.settings = service.settings.model_copy(
                update={"lease_seconds": MERGE_FUNCTION_TIMEOUT_SECONDS}
            )
        failed: list[str] = []
        start = threading.Barrier(len(bodies))

        def merge(index: int) -> None:
            start.wait()
            try:
                services[index].process(refs[index])
            except Exception:  # a lost race (412 past retries, busy batch): SQS redelivers
                failed.append(bodies[index])

        threads = [threading.Thread(target=merge, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.tally.deliveries += len(bodies)
        return failed

    def settle(self) -> None:
        tally, injected = self.tally, self.injected
        ok = not self.problems
        tally.scenarios += 1
        tally.scenarios_ok += ok
        tally.crashes += injected.crashes
        tally.throttles += injected.throttles
        tally.partial_events += injected.partial_events
        tally.races += injected.races
        if ok:
            tally.crashes_survived += injected.crashes
            tally.throttles_survived += injected.throttles
            tally.partial_events_survived += injected.partial_events
            tally.races_survived += injected.races
        else:
            tally.failures.append(
                f"scenario {self.number} ({self.table}): " + "; ".join(self.problems[:6])
            )


def run_faults(
    scenarios: int, seed: int, fault_rate: float = 0.5, progress: bool = False
) -> FaultTally:
    tally = FaultTally()
    for number in range(scenarios):
        if progress and number % 20 == 0:
            print(f"fault scenarios: {number}/{scenarios}", file=sys.stderr, flush=True)
        scenario = Scenario(number, seed, tally, fault_rate)
        try:
            scenario.run()
        except Exception as exc:  # the harness itself: report it, keep going
            scenario.problems.append(f"scenario raised {type(exc).__name__}: {exc}")
        scenario.settle()
    return tally
