"""Runs the three parts of the reliability suite and prints one summary table."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from shared.tables import TABLES
from tests.aws import AWS_ENV
from tests.reliability.faults import CRASH_POINTS, FaultTally, run_faults
from tests.reliability.hostile import HostileTally, merge_log_to, run_hostile
from tests.reliability.load import LoadTally, run_load
from tests.reliability.memory import PeakMemory, mb
from tests.reliability.soak import BOUND_EXTRA, BOUND_FACTOR, SoakTally, run_soak


@dataclass
class Params:
    scenarios: int = 200
    seed: int = 1
    quick: bool = False
    load_versions: int = 200
    only: frozenset[int] | None = None  # rerun just these fault scenarios (of `scenarios`)
    soak_rows: int = 20_000
    soak_merges: int = 500

    @classmethod
    def quick_form(cls, seed: int = 1) -> Params:
        return cls(
            scenarios=10, seed=seed, quick=True, load_versions=3, soak_rows=500, soak_merges=3
        )


# The whole run's memory (every process it starts), at most.
MEMORY_LIMIT_BYTES = 4 * 2**30


@dataclass
class Summary:
    params: Params
    faults: FaultTally
    hostile: HostileTally
    load: LoadTally
    soak: SoakTally
    seconds: float
    peak_bytes: int  # every process of the run, at its highest

    @property
    def lost(self) -> int:
        return self.faults.rows.lost + self.hostile.rows.lost + self.load.comparison.lost

    @property
    def duplicated(self) -> int:
        return (
            self.faults.rows.duplicated
            + self.hostile.rows.duplicated
            + self.load.comparison.duplicated
        )

    @property
    def changed_by_replay(self) -> int:
        return self.faults.changed_by_replay

    @property
    def failures(self) -> list[str]:
        memory = (
            [f"the run held {mb(self.peak_bytes)}, past {mb(MEMORY_LIMIT_BYTES)}"]
            if self.peak_bytes > MEMORY_LIMIT_BYTES
            else []
        )
        failures = self.faults.failures + self.hostile.failures + self.load.failures
        return [*failures, *self.soak.failures, *memory]

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.changed_by_replay == 0
            and not self.failures
            and self.load.finished
        )

    def table(self) -> str:
        f, h, ld = self.faults, self.hostile, self.load
        not_newest = f.rows.not_newest + h.rows.not_newest + ld.comparison.not_newest
        unexpected = f.rows.unexpected + h.rows.unexpected + ld.comparison.unexpected
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(h.by_outcome.items()))
        lines = [
            ("scenarios run (ok)", f"{f.scenarios} ({f.scenarios_ok})"),
            ("  staged files / deliveries", f"{f.files} / {f.deliveries}"),
            ("  staging key overwritten before its merge", f"{f.overwritten}"),
            ("  delivered after a file observed later", f"{f.delivered_early}"),
            ("  files the ingest observed (observed-at)", f"{f.ingest_observed}"),
            ("  silent edits (same last_updated, other row)", f"{f.silent_edits}"),
            ("  tables switched to partitions mid-scenario", f"{f.layout_switches}"),
            ("faults injected / survived", f"{self.faults_injected} / {self.faults_survived}"),
            (
                "  crashes at an AWS call (points covered)",
                f"{f.crashes} / {f.crashes_survived} "
                f"({len(f.crash_points)} of {len(CRASH_POINTS)})",
            ),
            ("  S3 503 SlowDown, retried", f"{f.throttles} / {f.throttles_survived}"),
            (
                "  EventBridge FailedEntryCount > 0, resent",
                f"{f.partial_events} / {f.partial_events_survived}",
            ),
            ("  two merges of one table at once", f"{f.races} / {f.races_survived}"),
            ("bad inputs tried / handled", f"{h.cases} / {h.handled}"),
            ("  as expected", outcomes or "-"),
            (
                "  largest file merged",
                f"{h.biggest_file_bytes / 2**20:.1f} MB; {h.biggest_file_rows:,} rows",
            ),
            (
                "load: tables x versions",
                f"{ld.tables} x {ld.files // max(ld.tables, 1)} = {ld.files} files, "
                f"{ld.rows:,} rows in {ld.seconds:.1f}s",
            ),
            (
                "  throughput",
                f"{ld.files_per_second:.1f} files/s, {ld.rows_per_second:.0f} rows/s",
            ),
            ("  DLQ messages", f"{ld.dlq_messages}"),
            ("  peak memory (runtime, all processes)", mb(ld.peak_bytes)),
            *self._soak_lines(),
            ("peak memory, whole run (all processes)", mb(self.peak_bytes)),
            ("rows lost", f"{self.lost}"),
            ("rows duplicated", f"{self.duplicated}"),
            ("objects changed by a replay", f"{self.changed_by_replay}"),
            (
                "  redeliveries / ingestctl replays after the end",
                f"{f.redeliveries} / {f.replays}",
            ),
            ("  new event ids on replay", f"{f.new_event_ids_on_replay}"),
            (
                "  latest not the latest observation's / rows never staged",
                f"{not_newest} / {unexpected}",
            ),
        ]
        width = max(len(name) for name, _ in lines)
        verdict = "PASS" if self.ok else "FAIL"
        header = (
            f"reliability: seed {self.params.seed}, {self.params.scenarios} scenarios"
            f"{', quick' if self.params.quick else ''}; {self.seconds:.0f}s; {verdict}"
        )
        rule = "-" * (width + 40)
        body = [f"| {name:<{width}} | {value}" for name, value in lines]
        return "\n".join([header, rule, *body, rule])

    def _soak_lines(self) -> list[tuple[str, str]]:
        sk, last = self.soak, self.soak.last
        if last is None:
            return [("soak", "not run")]
        expired = sk.expired.versions if sk.expired else 0
        return [
            (
                "soak: rows x merges (rows changed each)",
                f"{sk.rows:,} x {sk.merges} ({sk.changed_per_merge}) in {sk.seconds:.0f}s",
            ),
            (
                "  peak memory (runtime / server process)",
                f"{mb(sk.peak_runtime_bytes)} / {mb(sk.peak_server_bytes)}",
            ),
            (
                "  at the end: memory / bucket (versions)",
                f"{mb(last.runtime_bytes)} / {mb(last.bucket_bytes)} ({last.versions:,})",
            ),
            (
                f"  bound {BOUND_FACTOR}x bucket + {mb(BOUND_EXTRA)}, at every sample",
                f"{'held' if sk.within_bound else 'EXCEEDED'} ({len(sk.samples)} samples)",
            ),
            (
                "  a lifecycle day later: bucket (versions expired)",
                f"{mb(sk.bucket_after_a_day)} ({expired:,})",
            ),
        ]

    @property
    def faults_injected(self) -> int:
        f = self.faults
        return f.crashes + f.throttles + f.partial_events + f.races

    @property
    def faults_survived(self) -> int:
        f = self.faults
        return (
            f.crashes_survived
            + f.throttles_survived
            + f.partial_events_survived
            + (f.races_survived)
        )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The functions' JSON logs and metrics go nowhere while the suite runs."""
    saved = {name: os.environ.get(name) for name in AWS_ENV}
    for name, value in AWS_ENV.items():
        os.environ.setdefault(name, value)
    endpoint = os.environ.pop("AWS_ENDPOINT_URL", None)
    stream = merge_log_to(io.StringIO())
    events_log = logging.getLogger("shared.events")
    disabled, events_log.disabled = events_log.disabled, True
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            _warnings_off(),
        ):
            yield
    finally:
        events_log.disabled = disabled
        merge_log_to(stream)
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        if endpoint is not None:
            os.environ["AWS_ENDPOINT_URL"] = endpoint


@contextlib.contextmanager
def _warnings_off() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run_suite(params: Params, progress: bool = False) -> Summary:
    started = time.monotonic()
    with quiet(), PeakMemory() as peak:
        only = None if params.only is None else params.only.__contains__
        faults = run_faults(params.scenarios, params.seed, progress=progress, only=only)
        _say(progress, "hostile inputs")
        hostile = run_hostile(params.quick)
        _say(progress, f"load: {len(TABLES)} tables x {params.load_versions} versions")
        load = run_load(params.seed, versions=params.load_versions)
        _say(progress, f"soak: {params.soak_rows:,} rows x {params.soak_merges} merges")
        soak = run_soak(rows=params.soak_rows, merges=params.soak_merges)
    seconds = time.monotonic() - started
    return Summary(params, faults, hostile, load, soak, seconds, peak.total)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)
