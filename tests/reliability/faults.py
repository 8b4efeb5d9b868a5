"""Seeded random scenarios: random table, version histories (silent edits included) and batch
splits, some files observed by the ingest rather than uploaded by hand, a table switched to
key-range partitions mid-scenario, every notification delivered 1-3 times in random order
with a crash, a throttle, a refused event or a race injected into deliveries; then every
notification is delivered again and every archived batch replayed (`ingestctl replay`), and
the bucket must not change.

Built on the moto pipeline of the merge's own tests (`tests/integration/merge_pipeline.py`):
the real handler, the real service, moto's S3 (versioned, notifying as AWS does), SQS and
EventBridge. Faults are injected at the AWS-call level, by botocore event hooks on the clients
a delivery's service is given.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto import mock_aws

from ops.dismissal import replay
from ops.local.moto_edge import aws_like_moto
from ops.sample_data import SampleDatabase
from services.merge import handler as merge_handler
from services.merge.notifications import S3Notification, parse_body
from services.merge.service import MergeService
from services.merge.source import ObjectRef
from shared.events import EventPublisher
from shared.layout import archive_prefix, baseline_key, staging_key
from shared.observation import OBSERVED_METADATA, observed_at_metadata
from shared.queues import MessageQueue
from shared.rows import dump_rows, validate_rows
from shared.storage import BucketStore
from shared.tables import TABLES, TableSpec
from tests.integration.merge_pipeline import (
    BUCKET,
    REGION,
    LambdaContext,
    Pipeline,
    s3_answer,
    table_partitions,
)
from tests.reliability.oracle import (
    Comparison,
    Observed,
    changed_keys,
    compare,
    expect,
    object_versions,
    observed_of_metadata,
    observed_of_notification,
    read_table,
)

# Crash points walked in turn, from a place of its own in each scenario (so a scenario reruns
# alone the same way, thread timing in its races aside: `run_faults(only=...)`): the Nth AWS
# call of a delivery's merge (S3, EventBridge and SQS together; reads count), before it is
# sent or after its answer is in. An uninterrupted merge makes 9-14 calls on one file, 11-25
# on partitions; a redelivery of a finished batch 2.
CRASH_CALLS = 24
CRASH_POINTS = [(n, after) for after in (False, True) for n in range(1, CRASH_CALLS + 1)]
MAX_ATTEMPTS = 25  # deliveries of one message before the scenario counts it stuck
# Files the ingest wrote carry the time it read them; these are read before any hand upload.
INGEST_READ = datetime(2020, 1, 1, tzinfo=UTC)
PARTITION_WIDTH = 2  # rows per partition after a layout switch: a batch spans several


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
    silent_edits: int = 0  # versions of a key with the last_updated of another, other content
    ingest_observed: int = 0  # files with `observed-at` (observation order != upload order)
    layout_switches: int = 0  # a table made partitioned between two uploads
    delivered_early: int = 0  # a file delivered after one observed later than it
    rows: Comparison = field(default_factory=Comparison)
    redeliveries: int = 0  # every notification once more, after everything is done
    replays: int = 0  # archived batches staged again (`ingestctl replay`)
    changed_by_replay: int = 0
    new_event_ids_on_replay: int = 0
    stuck: int = 0
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


@dataclass
class Generated:
    files: list[bytes]
    silent_edits: int


def random_files(rng: random.Random, table: str) -> Generated:
    """Versions of a few rows split over files: versions may repeat across files and inside
    one; files may be empty. Some versions are silent edits: another content with the
    `last_updated` of a version before them (where the table has a text column to edit)."""
    spec = TABLES[table]
    sample = SampleDatabase(rng.randrange(1 << 30), orders=8, designs=6).rows(table)
    chosen = rng.sample(sample, k=min(len(sample), rng.randint(1, 6)))
    versions, silent = [], 0
    for row in chosen:
        text = _text_column(spec, row)
        for minutes in rng.sample(range(1, 900), rng.randint(1, 4)):
            edits = 1 + (rng.random() < 0.35 if text else 0) + (rng.random() < 0.1 if text else 0)
            silent += edits - 1
            for edit in range(edits):
                version = dict(row, last_updated=row["last_updated"] + timedelta(minutes=minutes))
                if text:
                    version[text] = f"{row[text][:40]} v{minutes}" + (f"e{edit}" if edit else "")
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
    return Generated([dump_rows(spec, f) for f in files], silent)


# ---- injected faults: botocore hooks on a delivery's own clients ---------------------------


class Crash(RuntimeError):
    """An injected failure: the process died here."""


@dataclass
class Clients:
    """The AWS clients of one merge service (each delivery's own, so hooks stay with it)."""

    s3: Any = field(default_factory=lambda: boto3.client("s3", region_name=REGION))
    events: Any = field(default_factory=lambda: boto3.client("events", region_name=REGION))
    sqs: Any = field(default_factory=lambda: boto3.client("sqs", region_name=REGION))

    def all(self) -> list[Any]:
        return [self.s3, self.events, self.sqs]


class CrashAt:
    """The Nth AWS call of these clients (together) kills the process: before it is sent
    (`before-call`: it never happens) or once its answer is in (`after-call`, whatever the
    status: it happened)."""

    def __init__(self, clients: Clients, number: int, after: bool) -> None:
        self.number, self.after = number, after
        self.calls: list[str] = []
        self.fired: str | None = None
        for client in clients.all():
            client.meta.events.register("provide-client-params", self._before_call)
            client.meta.events.register("after-call", self._after_call)

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(f"{model.name} {params.get('Key', '')}".rstrip())
        if len(self.calls) == self.number and not self.after:
            self._crash("before")

    def _after_call(self, model: Any, **_: Any) -> None:
        if len(self.calls) == self.number and self.after and self.fired is None:
            self._crash("after")

    def _crash(self, when: str) -> None:
        self.fired = f"{when} call {self.number} ({self.calls[-1]})"
        raise Crash(self.fired)


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def throttle_s3(client: Any, request_number: int) -> list[int]:
    """The client's Nth S3 request is answered 503 SlowDown once (botocore retries it)."""
    seen = [0]
    fired: list[int] = []

    def slow_down(request: Any, **_: Any) -> Any:
        seen[0] += 1
        if seen[0] == request_number:
            fired.append(seen[0])
            return s3_answer(request, 503, _SLOW_DOWN)
        return None

    client.meta.events.register_first("before-send.s3", slow_down)
    return fired


_THROTTLED = {"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}


class RefuseOneEvent:
    """The client's first PutEvents refuses its last entry (FailedEntryCount 1), as
    EventBridge does under throttling: that entry is not sent, the publisher must resend it."""

    def __init__(self, client: Any) -> None:
        self.refused = 0
        self._pending: str | None = None  # "drop": the last entry was held back; "all"
        events = client.meta.events
        events.register("provide-client-params.events.PutEvents", self._hold_back)
        events.register_first("before-send.events.PutEvents", self._answer_alone)
        events.register("after-call.events.PutEvents", self._report_refused)

    def _hold_back(self, params: dict[str, Any], **_: Any) -> None:
        entries = params.get("Entries") or []
        if self.refused or not entries:
            return
        self.refused += 1
        if len(entries) == 1:
            self._pending = "all"  # nothing to send: answered without sending
        else:
            self._pending = "drop"
            params["Entries"] = entries[:-1]

    def _answer_alone(self, request: Any, **_: Any) -> Any:
        if self._pending != "all":
            return None
        self._pending = None
        body = json.dumps({"FailedEntryCount": 1, "Entries": [_THROTTLED]}).encode()
        return s3_answer(request, 200, body)

    def _report_refused(self, parsed: dict[str, Any], **_: Any) -> None:
        if self._pending != "drop":
            return
        self._pending = None
        parsed.setdefault("Entries", []).append(dict(_THROTTLED))
        parsed["FailedEntryCount"] = int(parsed.get("FailedEntryCount", 0)) + 1


# ---- one scenario --------------------------------------------------------------------------


@dataclass
class _Upload:
    data: bytes
    body: str
    observed: Observed


class Scenario:
    def __init__(self, number: int, seed: int, tally: FaultTally, fault_rate: float) -> None:
        self.rng = random.Random(f"{seed}:{number}")
        self.number = number
        self.tally = tally
        self.fault_rate = fault_rate
        self.table = self.rng.choice(sorted(TABLES))
        self.injected = _Injected()
        self.problems: list[str] = []
        self.uploads: list[_Upload] = []
        self.crash_cursor = number * 11  # coprime with len(CRASH_POINTS): every start
        self.delivered: list[Observed] = []

    def run(self) -> None:
        # moto as AWS: notifications name the version and carry a sequencer, conditional
        # puts are atomic (else the races here would test moto, not the merge)
        with mock_aws(), aws_like_moto(), contextlib.ExitStack() as layout:
            self.layout = layout
            self.pipeline = Pipeline(self.table)
            self.healthy = Clients()
            self._drain()  # S3's test event
            try:
                self._run()
            finally:
                merge_handler.use_service(None)

    def _run(self) -> None:
        pipeline, rng = self.pipeline, self.rng
        generated = random_files(rng, self.table)
        files = generated.files
        self.tally.files += len(files)
        self.tally.silent_edits += generated.silent_edits
        baseline_at = rng.randrange(len(files)) if rng.random() < 0.4 else None
        # a switch comes before a file with rows: new rows are what moves latest into
        # partitions (if no merge came after it, the first would be a replay, and the replay
        # would commit the move: a replay that changes latest, which the suite counts)
        with_rows = [i for i, data in enumerate(files) if data.strip() not in (b"[]", b"")]
        switch_at = rng.choice(with_rows) if with_rows and rng.random() < 0.35 else None
        ingest_reads = rng.sample(range(10_000), len(files)) if rng.random() < 0.3 else None
        waiting: list[str] = []
        for index, data in enumerate(files):
            if index == switch_at:
                self._switch_to_partitions()
            key = baseline_key(self.table) if index == baseline_at else staging_key(self.table)
            metadata = {}
            if ingest_reads is not None and rng.random() < 0.6:
                read = INGEST_READ + timedelta(seconds=ingest_reads[index])
                metadata = observed_at_metadata(read)
                self.tally.ingest_observed += 1
            pipeline.s3.put_object(Bucket=BUCKET, Key=key, Body=data, Metadata=metadata)
            (body,) = self._drain()
            observed = (
                observed_of_metadata(metadata[OBSERVED_METADATA])
                if metadata
                else observed_of_notification(body)
            )
            self.uploads.append(_Upload(data, body, observed))
            waiting.append(body)
            if rng.random() < 0.5:  # deliver now; otherwise the key may be overwritten first
                self.tally.overwritten += max(0, len(waiting) - 1)
                self._deliver_all(waiting)
                waiting = []
        self.tally.overwritten += max(0, len(waiting) - 1)
        self._deliver_all(waiting)
        self._check_rows()
        self._redeliver_everything()
        self._replay_archives()

    def _switch_to_partitions(self) -> None:
        self.layout.enter_context(table_partitions(self.table, PARTITION_WIDTH))
        self.tally.layout_switches += 1

    def _check_rows(self) -> None:
        pipeline = self.pipeline
        in_order = sorted(self.uploads, key=lambda upload: upload.observed)
        latest, history = read_table(pipeline.s3, BUCKET, self.table)
        rows = compare(expect(pipeline.spec, [u.data for u in in_order]), latest, history)
        self.tally.rows.add(rows)
        if not rows.ok:
            self.problems += rows.details[:5]
        for key in (staging_key(self.table), baseline_key(self.table)):
            if left := versions_of(pipeline.s3, key):
                self.problems.append(f"{len(left)} version(s) of {key} left behind")
        if dlq := pipeline.dlq_bodies():
            self.problems.append(f"{len(dlq)} message(s) in the DLQ")

    def _redeliver_everything(self) -> None:
        """Every notification once more (its version is gone): nothing may change."""
        pipeline = self.pipeline
        before, ids_before = object_versions(pipeline.s3, BUCKET), set(pipeline.event_ids())
        for upload in self.uploads:
            self.tally.redeliveries += 1
            if not self._deliver([upload.body], self._service(self.healthy)):
                self.problems.append("a redelivered message failed")
        self._unchanged_since(before, ids_before, "redelivery")

    def _replay_archives(self) -> None:
        """`ingestctl replay` (`ops.dismissal.replay`) of every archived batch, delivered
        with faults as any notification (failed deliveries again): the same batch again, so
        no object under latest/, history/, archive/ or the log changes, no event id is new."""
        pipeline = self.pipeline
        store = BucketStore(BUCKET, pipeline.s3)
        archives = sorted(store.keys(archive_prefix(self.table)))
        before, ids_before = object_versions(pipeline.s3, BUCKET), set(pipeline.event_ids())
        for archive in archives:
            self.tally.replays += 1
            replay(store, self.table, archive)
            self._deliver_all(self._drain(), copies=1)  # with faults, as any delivery
        self._unchanged_since(before, ids_before, "replay")

    def _unchanged_since(
        self, before: dict[str, list[tuple[str, ...]]], ids_before: set[str], what: str
    ) -> None:
        pipeline = self.pipeline
        changed = changed_keys(before, object_versions(pipeline.s3, BUCKET))
        new_ids = set(pipeline.event_ids()) - ids_before
        self.tally.changed_by_replay += len(changed)
        self.tally.new_event_ids_on_replay += len(new_ids)
        if changed or new_ids:
            self.problems.append(f"{what} changed {changed[:5]}, new events {sorted(new_ids)[:5]}")

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

    def _service(self, clients: Clients) -> MergeService:
        pipeline = self.pipeline
        return MergeService(
            pipeline.settings,
            BucketStore(BUCKET, clients.s3),
            EventPublisher(pipeline.bus, clients.events),
            MessageQueue(pipeline.dlq_url, clients.sqs),
        )

    def _deliver_all(self, bodies: list[str], copies: int = 3) -> None:
        """Each message 1-`copies` times, in random order; a failed delivery is redelivered
        later."""
        rng = self.rng
        pending = [b for b in bodies for _ in range(rng.randint(1, copies))]
        rng.shuffle(pending)
        attempts: Counter[str] = Counter()
        while pending:
            if len(pending) > 1 and rng.random() < self.fault_rate / 3:
                pair = [pending.pop(rng.randrange(len(pending))) for _ in range(2)]
                self._note_order(pair)
                failed = self._race(pair)
            else:
                body = pending.pop(rng.randrange(len(pending)))
                self._note_order([body])
                failed = [] if self._deliver_with_fault(body) else [body]
            for body in failed:
                attempts[body] += 1
                if attempts[body] >= MAX_ATTEMPTS:
                    self.tally.stuck += 1
                    self.problems.append(f"a message failed {MAX_ATTEMPTS} times")
                    continue
                pending.insert(rng.randrange(len(pending) + 1), body)

    def _deliver_with_fault(self, body: str) -> bool:
        rng, tally = self.rng, self.tally
        if rng.random() >= self.fault_rate:
            return self._deliver([body], self._service(self.healthy))
        clients = Clients()
        kind = rng.choices(["crash", "throttle", "events"], weights=[6, 1, 1])[0]
        if kind == "crash":
            point = CRASH_POINTS[self.crash_cursor % len(CRASH_POINTS)]
            self.crash_cursor += 1
            crash = CrashAt(clients, *point)
            ok = self._deliver([body], self._service(clients))
            if crash.fired:
                self.injected.crashes += 1
                tally.crash_points.add(point)
                if ok:
                    self.problems.append(f"a crash {crash.fired} did not fail the record")
            return ok
        if kind == "throttle":
            fired = throttle_s3(clients.s3, rng.randint(1, 12))
            ok = self._deliver([body], self._service(clients))
            self.injected.throttles += len(fired)
            if fired and not ok:
                self.problems.append("a throttled request was not retried")
            return ok
        refusing = RefuseOneEvent(clients.events)
        ok = self._deliver([body], self._service(clients))
        self.injected.partial_events += refusing.refused
        if refusing.refused and not ok:
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

    def _note_order(self, bodies: list[str]) -> None:
        """Count deliveries of a file observed before one delivered earlier: the case where
        delivery order and observation order part."""
        observed = {u.body: u.observed for u in self.uploads}
        for body in bodies:
            if body not in observed:
                continue  # a replay's notification
            if self.delivered and observed[body] < max(self.delivered):
                self.tally.delivered_early += 1
            self.delivered.append(observed[body])

    def _race(self, bodies: list[str]) -> list[str]:
        """Two merges of this table at once, in threads, each with its own clients."""
        self.injected.races += 1
        refs = [_ref(body) for body in bodies]
        services = [self._service(Clients()) for _ in bodies]
        failed: list[str] = []
        start = threading.Barrier(len(bodies))

        def merge(index: int) -> None:
            start.wait()
            try:
                services[index].process(refs[index])
            except Exception:  # a lost race (the log kept moving): SQS redelivers
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


def versions_of(s3: Any, key: str) -> list[dict[str, Any]]:
    """The versions of exactly `key` (not of keys it is a prefix of)."""
    listing = s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    return [v for v in listing.get("Versions", []) if v["Key"] == key]


def _ref(body: str) -> ObjectRef:
    """What the handler makes of a notification, for calling a service directly."""
    notification = parse_body(body)
    assert isinstance(notification, S3Notification)
    (record,) = notification.Records
    return ObjectRef(
        bucket=record.bucket,
        key=record.object_key,
        version_id=record.s3.object.versionId,
        message_body=body,
        event_time=record.eventTime,
        sequencer=record.s3.object.sequencer,
    )


def run_faults(
    scenarios: int,
    seed: int,
    fault_rate: float = 0.5,
    progress: bool = False,
    only: Callable[[int], bool] | None = None,
) -> FaultTally:
    """`scenarios` seeded scenarios (`only`: just the numbers it accepts, to rerun one)."""
    tally = FaultTally()
    for number in range(scenarios):
        if only is not None and not only(number):
            continue
        if progress and number % 20 == 0:
            print(f"fault scenarios: {number}/{scenarios}", file=sys.stderr, flush=True)
        scenario = Scenario(number, seed, tally, fault_rate)
        try:
            scenario.run()
        except Exception as exc:  # the harness itself: report it, keep going
            scenario.problems.append(f"scenario raised {type(exc).__name__}: {exc}")
        scenario.settle()
    return tally
