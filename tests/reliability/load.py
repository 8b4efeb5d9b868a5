"""Load: many staging versions of every table pushed through the local runtime (moto's server,
the dispatcher, one merge process per table) as fast as it takes them; then the oracle.

The tables are uploaded side by side, each table's files one after another: a table's upload
order is then its observation order (each later upload gets a later eventTime or sequencer),
which is what the oracle needs; the runtime delivers them in whatever order it does."""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3

from ops.local.dispatcher import DispatcherError, Invocation, Outcome
from ops.local.runtime import LocalRuntime
from ops.sample_data import SampleDatabase
from shared.layout import staging_key
from shared.rows import dump_rows, validate_rows
from shared.tables import TABLES
from tests.reliability.memory import PeakMemory
from tests.reliability.oracle import Comparison, compare, expect, read_table


@dataclass
class LoadTally:
    tables: int = 0
    files: int = 0
    rows: int = 0
    seconds: float = 0.0
    dlq_messages: int = 0
    failed_records: int = 0
    finished: bool = False
    peak_bytes: int = 0  # every process of the runtime, at its highest
    comparison: Comparison = field(default_factory=Comparison)
    failures: list[str] = field(default_factory=list)

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


class _Outcomes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failed_records = 0
        self.errors: list[str] = []

    def __call__(self, outcome: Outcome) -> None:
        with self.lock:
            if isinstance(outcome, Invocation):
                self.failed_records += sum(not r.ok for r in outcome.records)
            elif isinstance(outcome, DispatcherError):
                self.errors.append(f"{outcome.thread}: {outcome.error}")


def load_files(seed: int, table: str, versions: int, rows_per_file: int) -> list[bytes]:
    """`versions` files of one table, each a few rows with new versions (later each time)."""
    rng = random.Random(f"{seed}:{table}")
    spec = TABLES[table]
    sample = SampleDatabase(seed).rows(table)
    files = []
    for number in range(versions):
        rows = [
            dict(row, last_updated=row["last_updated"] + timedelta(minutes=number + 1))
            for row in rng.sample(sample, min(rows_per_file, len(sample)))
        ]
        report = validate_rows(spec, rows, f"load {table}")
        assert report.ok, report.problems[:3]
        files.append(dump_rows(spec, report.rows))
    return files


def _queues_idle(sqs: Any, runtime: LocalRuntime) -> bool:
    assert runtime.deployment is not None
    for res in runtime.deployment.tables.values():
        attrs = sqs.get_queue_attributes(
            QueueUrl=res.queue.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if any(int(v) for v in attrs.values()):
            return False
    return True


def run_load(
    seed: int,
    tables: int = len(TABLES),
    versions: int = 200,
    rows_per_file: int = 5,
    timeout: float = 1800.0,
) -> LoadTally:
    names = sorted(TABLES)[:tables]
    tally = LoadTally(tables=len(names))
    staged = {t: load_files(seed, t, versions, rows_per_file) for t in names}
    outcomes = _Outcomes()
    with tempfile.TemporaryDirectory(prefix="reliability-load-") as logs, PeakMemory() as peak:
        runtime = LocalRuntime(outcomes, tables=names, log_dir=Path(logs))
        runtime.start()
        try:
            s3, sqs = boto3.client("s3"), boto3.client("sqs")
            bucket = runtime.bucket
            started = time.monotonic()

            def upload(table: str) -> None:
                for data in staged[table]:  # in order: the oracle's observation order
                    s3.put_object(Bucket=bucket, Key=staging_key(table), Body=data)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(upload, names))
            tally.files = sum(len(files) for files in staged.values())
            tally.rows = sum(len(json.loads(data)) for files in staged.values() for data in files)
            deadline = started + timeout
            while time.monotonic() < deadline:
                left = s3.list_object_versions(Bucket=bucket, Prefix="staging/").get("Versions")
                if not left and _queues_idle(sqs, runtime):
                    tally.finished = True
                    break
                time.sleep(0.2)
            tally.seconds = time.monotonic() - started
            if not tally.finished:
                tally.failures.append(f"not finished after {timeout:.0f}s")
            assert runtime.deployment is not None
            for table, res in runtime.deployment.tables.items():
                tally.dlq_messages += int(
                    sqs.get_queue_attributes(
                        QueueUrl=res.dlq.url, AttributeNames=["ApproximateNumberOfMessages"]
                    )["Attributes"]["ApproximateNumberOfMessages"]
                )
                latest, history = read_table(s3, bucket, table)
                rows = compare(expect(TABLES[table], staged[table]), latest, history)
                tally.comparison.add(rows)
                tally.failures += [f"{table}: {d}" for d in rows.details[:3]]
        finally:
            runtime.stop()
    tally.peak_bytes = peak.total
    tally.failed_records = outcomes.failed_records
    if tally.dlq_messages:
        tally.failures.append(f"{tally.dlq_messages} message(s) in the DLQs")
    tally.failures += outcomes.errors[:5]
    return tally
