"""Soak: one big table merged many times through the local runtime (moto's server, the
dispatcher, the lifecycle player), one file after another; the runtime's memory against what
the bucket holds. The bound (issue 17): at every sample, all the runtime's processes together
hold at most 2x the bucket's bytes (every version, current or not) plus 1.5 GB."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from bench.merge import _row as bench_row
from ops.local.dispatcher import DispatcherError, Outcome
from ops.local.lifecycle import LifecyclePlayer, LifecycleRun
from ops.local.runtime import LocalRuntime
from shared.layout import baseline_key, staging_key
from shared.reader import read_latest
from shared.retention import DAY_SECONDS
from shared.rows import dump_rows
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.reliability.memory import PeakMemory

TABLE = "sales_order"
BOUND_FACTOR = 2
BOUND_EXTRA = 1536 * 2**20  # 1.5 GB
T0 = datetime(2024, 1, 1)


@dataclass
class Sample:
    merges: int
    runtime_bytes: int  # every process of the runtime
    server_bytes: int  # the process that hosts moto's server
    bucket_bytes: int
    versions: int

    @property
    def bound(self) -> int:
        return BOUND_FACTOR * self.bucket_bytes + BOUND_EXTRA


@dataclass
class SoakTally:
    rows: int = 0
    merges: int = 0
    changed_per_merge: int = 0
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    peak_runtime_bytes: int = 0
    peak_server_bytes: int = 0
    expired: LifecycleRun | None = None
    bucket_after_a_day: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def within_bound(self) -> bool:
        return all(s.runtime_bytes <= s.bound for s in self.samples)

    @property
    def last(self) -> Sample | None:
        return self.samples[-1] if self.samples else None


def sales_order(key: int, minutes: int) -> dict[str, Any]:
    """A sales_order row (the bench's shape); `minutes` moves its last_updated and units on."""
    return bench_row(key, minutes, 1 + (key + minutes) % 97)


def rows_file(rows: list[dict[str, Any]]) -> bytes:
    spec = TABLES[TABLE]
    return dump_rows(spec, (spec.row_model.model_validate(row) for row in rows))


def bucket_size(s3: Any, bucket: str) -> tuple[int, int]:
    """Bytes and count of every version the bucket holds."""
    size = count = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            size += version["Size"]
            count += 1
    return size, count


def wait_merged(s3: Any, bucket: str, key: str, timeout: float) -> None:
    """Until the merge deleted the version it applied (its last step)."""
    deadline = time.monotonic() + timeout
    while s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} not merged within {timeout:.0f}s")
        time.sleep(0.02)


class _Errors:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, outcome: Outcome) -> None:
        if isinstance(outcome, DispatcherError):
            self.errors.append(f"{outcome.thread}: {outcome.error}")


def run_soak(
    rows: int = 20_000, merges: int = 500, changed: int = 100, sample_every: int = 25
) -> SoakTally:
    tally = SoakTally(rows=rows, merges=merges, changed_per_merge=changed)
    errors = _Errors()
    with tempfile.TemporaryDirectory(prefix="reliability-soak-") as logs, PeakMemory() as peak:
        runtime = LocalRuntime(errors, tables=[TABLE], log_dir=Path(logs))
        runtime.start()
        try:
            started = time.monotonic()
            _merge_all(runtime, tally, peak, sample_every)
            tally.seconds = time.monotonic() - started
            _check_latest(runtime, tally)
            _a_day_later(runtime, tally)
        finally:
            runtime.stop()
    tally.peak_runtime_bytes, tally.peak_server_bytes = peak.total, peak.own
    tally.failures += errors.errors[:5]
    if not tally.within_bound:
        worst = max(tally.samples, key=lambda s: s.runtime_bytes - s.bound)
        tally.failures.append(f"memory past the bound: {worst}")
    return tally


def _merge_all(runtime: LocalRuntime, tally: SoakTally, peak: PeakMemory, every: int) -> None:
    """The baseline, then `merges` staging files of `changed` rows each, one at a time."""
    s3, bucket = boto3.client("s3"), runtime.bucket
    s3.put_object(
        Bucket=bucket,
        Key=baseline_key(TABLE),
        Body=rows_file([sales_order(k, 0) for k in range(1, tally.rows + 1)]),
    )
    wait_merged(s3, bucket, baseline_key(TABLE), timeout=300)
    for number in range(1, tally.merges + 1):
        s3.put_object(
            Bucket=bucket, Key=staging_key(TABLE), Body=rows_file(_changes(tally, number))
        )
        wait_merged(s3, bucket, staging_key(TABLE), timeout=120)
        if number % every == 0 or number == tally.merges:
            own, total = peak.sample()
            size, count = bucket_size(s3, bucket)
            tally.samples.append(Sample(number, total, own, size, count))


def _changes(tally: SoakTally, number: int) -> list[dict[str, Any]]:
    """Merge `number`'s rows: a window of keys walking through the table."""
    first = (number * tally.changed_per_merge) % max(tally.rows - tally.changed_per_merge, 1)
    return [sales_order(k, number) for k in range(first + 1, first + 1 + tally.changed_per_merge)]


def _check_latest(runtime: LocalRuntime, tally: SoakTally) -> None:
    """latest holds every key once, each at its last change."""
    expected = dict.fromkeys(range(1, tally.rows + 1), 0)
    for number in range(1, tally.merges + 1):
        expected.update({row["sales_order_id"]: number for row in _changes(tally, number)})
    latest = read_latest(BucketStore(runtime.bucket), TABLES[TABLE]).rows
    found = {row.model_dump()["sales_order_id"]: row.model_dump()["last_updated"] for row in latest}
    wrong = [k for k, n in expected.items() if found.get(k) != T0 + timedelta(minutes=n)]
    if wrong or len(found) != len(expected):
        tally.failures.append(f"latest: {len(wrong)} keys not at their last change")


def _a_day_later(runtime: LocalRuntime, tally: SoakTally) -> None:
    """The lifecycle a day on: what the bucket still holds once the rules have run."""
    s3 = boto3.client("s3")
    later = datetime.now(UTC) + timedelta(seconds=DAY_SECONDS + 60)
    player = LifecyclePlayer(s3, runtime.bucket, clock=lambda: later)
    tally.expired = player.run_once()
    tally.bucket_after_a_day = bucket_size(s3, runtime.bucket)[0]
