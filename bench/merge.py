"""`make bench`: the project's merge against the floor and two table formats.

For each case (N rows of a sales_order-shaped table, K changed rows, clustered like totesys or
uniformly scattered) every tool runs in its own process, `--repeat` times:

- project-local: the merge service (services/merge) on local files through `FolderStore`
- project-moto:  the same merge on moto's in-process S3 (its RSS includes moto's bucket)
- orjson-floor:  read the whole latest file, orjson load, apply the changes, dump, write
- duckdb:        upsert on Parquet (anti-join + union, written to a new Parquet file)
- delta-rs:      MERGE into a Delta table with the change data feed on

It prints one table (median time, peak RSS, S3 requests, bytes read/written, ratios to
project-local) and writes bench/results.json. Data is generated once per (N, K, shape) under
bench/.data/. `python -m bench.merge --small` runs every tool at N=10k to prove it works.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DATA = ROOT / ".data"
TABLE = "sales_order"
PK = "sales_order_id"
BUCKET = "bench-bucket"
ROWS_PER_PARTITION = 10_000
# The 1M/10k uniform case before partitions were compressed (README, 2026-12-02): 306.1 MB
# read + 314.4 MB written in 4.265 s; issue 17's target is a quarter of the bytes.
BEFORE_COMPRESSION_MB, BEFORE_COMPRESSION_S = 306.1 + 314.4, 4.265
# What a benchmark's process runs the services with: their per-merge logs and metrics off.
QUIET = {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "1"}
TOOLS = ("project-local", "project-moto", "orjson-floor", "duckdb", "delta-rs")
REFERENCE = "project-local"


@dataclass(frozen=True)
class Case:
    n: int
    k: int
    shape: str  # clustered | uniform
    partitioned: bool

    @property
    def name(self) -> str:
        layout = "partitioned" if self.partitioned else "single-file"
        return f"N={_count(self.n)} K={_count(self.k)} {self.shape} {layout}"

    @property
    def data_dir(self) -> Path:
        return DATA / f"{self.n}_{self.k}_{self.shape}"


FULL_CASES = (
    Case(100_000, 1_000, "clustered", partitioned=False),
    Case(1_000_000, 1_000, "clustered", partitioned=False),
    Case(1_000_000, 1_000, "clustered", partitioned=True),
    Case(1_000_000, 10_000, "uniform", partitioned=True),
)
SMALL_CASES = (
    Case(10_000, 100, "clustered", partitioned=False),
    Case(10_000, 1_000, "uniform", partitioned=True),
)


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    s3_requests: int | None = None
    bytes_read: int | None = None
    bytes_written: int | None = None
    partitions_rewritten: int | None = None  # the single file counts as one
    noncurrent_bytes: int | None = None  # latest's bytes the merge left noncurrent
    latest_written_bytes: int | None = None  # latest's new objects (the changed partitions)


# ---- data ---------------------------------------------------------------------------------

T0 = datetime(2024, 1, 1)


def _row(key: int, minutes: int, units: int) -> dict[str, Any]:
    return {
        PK: key,
        "design_id": key % 300 + 1,
        "staff_id": key % 20 + 1,
        "counterparty_id": key % 20 + 1,
        "units_sold": units,
        "unit_price": Decimal(f"{2 + key % 300}.{key % 100:02d}"),
        "currency_id": key % 3 + 1,
        "agreed_delivery_date": "2024-02-01",
        "agreed_payment_date": "2024-02-03",
        "agreed_delivery_location_id": key % 30 + 1,
        "created_at": T0 + timedelta(minutes=key // 50),
        "last_updated": T0 + timedelta(minutes=minutes),
    }


def _canonical(rows: list[dict[str, Any]]) -> bytes:
    from shared.rows import dump_rows
    from shared.tables import get_table

    spec = get_table(TABLE)
    return dump_rows(spec, (spec.row_model.model_construct(**row) for row in rows))


def prepare(case: Case) -> Path:
    """latest (one file and partitions), the staging file, Parquet and Delta copies."""
    folder = case.data_dir
    if (folder / ".done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(f"{case.n}-{case.k}-{case.shape}")
    n, k = case.n, case.k
    base = [_row(key, key // 50, 1 + key % 90) for key in range(1, n + 1)]
    latest = _canonical(base)
    (folder / "latest.json").write_bytes(latest)
    later = n // 50 + 60
    if case.shape == "clustered":  # totesys: new ids at the tail, updates to recent rows
        recent = rng.sample(range(max(1, n - 2 * k), n + 1), k // 2)
        changed = [_row(key, later, 2 + key % 90) for key in sorted(recent)]
        changed += [_row(key, later, 1 + key % 90) for key in range(n + 1, n + 1 + k - k // 2)]
    else:  # uniform: updates scattered over every key (the worst case for partitions)
        changed = [_row(key, later, 2 + key % 90) for key in sorted(rng.sample(range(1, n + 1), k))]
    (folder / "staging.json").write_bytes(_canonical(changed))
    _write_partitions(folder / "partitioned", latest)
    _write_parquet_and_delta(folder)
    (folder / ".done").write_text("")
    return folder


def _write_partitions(root: Path, latest: bytes) -> None:
    import hashlib

    from shared.layout import latest_manifest_key, latest_partition_key
    from shared.partitions import PartitionManifest, PartitionRef, pack_partition, partition_low

    lines = latest[2:-3].split(b",\n")
    groups: dict[int, list[bytes]] = {}
    prefix = len(b'{"' + PK.encode() + b'":')
    for line in lines:
        key = int(line[prefix : line.index(b",", prefix)])
        groups.setdefault(partition_low(key, ROWS_PER_PARTITION), []).append(line)
    refs = []
    for low, rows in sorted(groups.items()):
        data = pack_partition(b"[\n" + b",\n".join(rows) + b"\n]\n")  # as the merge stores them
        high = low + ROWS_PER_PARTITION - 1
        digest = hashlib.sha256(data).hexdigest()[:12]
        object_key = latest_partition_key(TABLE, low, high, "benchbase", digest)
        (root / object_key).parent.mkdir(parents=True, exist_ok=True)
        (root / object_key).write_bytes(data)
        refs.append(PartitionRef(low=low, high=high, key=object_key, rows=len(rows)))
    manifest = PartitionManifest(
        table=TABLE, batch="benchbase", rows_per_partition=ROWS_PER_PARTITION, partitions=refs
    )
    (root / latest_manifest_key(TABLE)).write_bytes(manifest.model_dump_json(indent=1).encode())


def _write_parquet_and_delta(folder: Path) -> None:
    try:
        import duckdb
    except ImportError:
        return
    con = duckdb.connect()
    for stem in ("latest", "staging"):
        con.execute(
            f"COPY (SELECT * FROM read_json('{folder / stem}.json', format='array', "
            f"maximum_object_size=100000000)) TO '{folder / stem}.parquet' (FORMAT parquet)"
        )
    try:
        import pyarrow.parquet as pq
        from deltalake import write_deltalake
    except ImportError:
        return
    write_deltalake(
        str(folder / "delta"),
        pq.read_table(folder / "latest.parquet"),
        configuration={"delta.enableChangeDataFeed": "true"},
    )


# ---- the tools, each run in a child process -----------------------------------------------


def _reset_peak_rss() -> None:
    """Start the kernel's high-water mark of RSS afresh (Linux), so setup does not count."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(work: Callable[[], Run | None]) -> Run:
    """Time `work` and take the peak RSS while it ran (the process's imports included)."""
    _reset_peak_rss()
    started = time.perf_counter()
    extra = work()
    seconds = time.perf_counter() - started
    peak = _peak_rss_mb()
    if extra is None:
        return Run(seconds=seconds, peak_rss_mb=peak)
    return replace(extra, seconds=seconds, peak_rss_mb=peak)


def _merge_service(store: Any, partitioned: bool, publisher: Any = None) -> Any:
    """The merge service on the case's layout (one file for good, or partitions of
    ROWS_PER_PARTITION), without changing the registry the rest of the process reads; its
    events go to `publisher` (None: discarded, the bus is not what is measured)."""
    from services.merge.service import MergeService
    from services.merge.settings import MergeSettings
    from shared.events import EventPublisher
    from shared.queues import MessageQueue
    from shared.tables import TABLES, TableSpec

    class Discard(EventPublisher):
        def publish(self, details: Any) -> None:  # the bus is not S3: not measured here
            return None

    layout = replace(
        TABLES[TABLE],
        rows_per_partition=ROWS_PER_PARTITION if partitioned else None,
        partition_after_bytes=None,
    )

    class CaseMerge(MergeService):
        @property
        def spec(self) -> TableSpec:
            return layout

    settings = MergeSettings(
        bucket_name=BUCKET, table_name=TABLE, event_bus_name="bench", dlq_url="bench"
    )
    return CaseMerge(settings, store, publisher or Discard("bench"), MessageQueue("bench"))


def _latest_objects(case: Case, folder: Path) -> dict[str, bytes]:
    from shared.layout import latest_key

    if not case.partitioned:
        return {latest_key(TABLE): (folder / "latest.json").read_bytes()}
    root = folder / "partitioned"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.json*")}


def _process(service: Any, put: Any) -> int:
    """Merge the staged version as AWS would name it; returns the partitions it rewrote."""
    from services.merge.source import ObjectRef
    from shared.layout import staging_key
    from shared.partitions import partition_low

    ref = ObjectRef(BUCKET, staging_key(TABLE), put.version_id, "{}")
    outcome = service.process(ref)
    if outcome is None or outcome.status != "committed":
        raise RuntimeError(f"the merge did not commit: {outcome}")
    width = service.spec.rows_per_partition
    if width is None:
        return 1
    return len({partition_low(key, width) for key in outcome.keys_written})


def run_project_local(case: Case, folder: Path, work: Path) -> Run:
    from ops.folder_store import FolderStore
    from shared.layout import staging_key

    if case.partitioned:
        shutil.copytree(folder / "partitioned", work, dirs_exist_ok=True)
    else:
        (work / "latest").mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "latest.json", work / "latest" / f"{TABLE}.json")
    store = FolderStore(work, BUCKET)
    service = _merge_service(store, case.partitioned)
    put = store.put(staging_key(TABLE), (folder / "staging.json").read_bytes())
    before = _latest_versions(store)
    store.traffic.requests = store.traffic.bytes_read = store.traffic.bytes_written = 0

    def merge() -> Run:
        partitions = _process(service, put)
        traffic = store.traffic
        return Run(0, 0, traffic.requests, traffic.bytes_read, traffic.bytes_written, partitions)

    run = _timed(merge)
    after = _latest_versions(store)
    run.noncurrent_bytes = sum(size for version, size in before.items() if version not in after)
    run.latest_written_bytes = sum(size for version, size in after.items() if version not in before)
    return run


def _latest_versions(store: Any) -> dict[tuple[str, str], int]:
    """latest's current object versions and their sizes: a version current before a merge
    and not after is one S3 keeps as noncurrent (the lifecycle rules decide for how long)."""
    from shared.layout import Area

    return {
        (v.key, v.version_id): v.size
        for key in list(store.keys(f"{Area.LATEST}/"))
        for v in store.iter_versions(key)
    }


def run_project_moto(case: Case, folder: Path, work: Path) -> Run:
    import boto3
    from moto import mock_aws

    from shared.layout import staging_key
    from shared.storage import BucketStore, StoredObject, WriteResult

    class Metered(BucketStore):
        bytes_read = 0
        bytes_written = 0

        def get(self, key: str, version_id: str | None = None) -> StoredObject:
            found = super().get(key, version_id)
            Metered.bytes_read += len(found.data)
            return found

        def put(self, key: str, data: bytes, **kwargs: Any) -> WriteResult:
            Metered.bytes_written += len(data)
            return super().put(key, data, **kwargs)

    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "eu-west-2",
    }.items():
        os.environ[name] = value
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-2")
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
        )
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        for key, data in _latest_objects(case, folder).items():
            client.put_object(Bucket=BUCKET, Key=key, Body=data)
        store = Metered(BUCKET, client)
        service = _merge_service(store, case.partitioned)
        put = store.put(staging_key(TABLE), (folder / "staging.json").read_bytes())
        Metered.bytes_written = 0
        requests = [0]

        def count(**_: Any) -> None:
            requests[0] += 1

        client.meta.events.register("before-call.s3.*", count)

        def merge() -> Run:
            partitions = _process(service, put)
            return Run(0, 0, requests[0], Metered.bytes_read, Metered.bytes_written, partitions)

        return _timed(merge)


def run_orjson_floor(case: Case, folder: Path, work: Path) -> Run:
    import orjson

    source, target = folder / "latest.json", work / "latest.json"

    def floor() -> None:
        rows = orjson.loads(source.read_bytes())
        by_key = {row[PK]: row for row in rows}
        for row in orjson.loads((folder / "staging.json").read_bytes()):
            by_key[row[PK]] = row
        target.write_bytes(orjson.dumps([by_key[key] for key in sorted(by_key)]))

    return _timed(floor)


def run_duckdb(case: Case, folder: Path, work: Path) -> Run:
    import duckdb

    def upsert() -> None:
        con = duckdb.connect()
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{folder}/latest.parquet') WHERE {PK} NOT IN "
            f"(SELECT {PK} FROM read_parquet('{folder}/staging.parquet')) UNION ALL "
            f"SELECT * FROM read_parquet('{folder}/staging.parquet') ORDER BY {PK}) "
            f"TO '{work}/latest.parquet' (FORMAT parquet)"
        )

    return _timed(upsert)


def run_delta(case: Case, folder: Path, work: Path) -> Run:
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    shutil.copytree(folder / "delta", work / "delta")

    def merge() -> None:
        table = DeltaTable(str(work / "delta"))
        source = pq.read_table(folder / "staging.parquet")
        (
            table.merge(source, predicate=f"t.{PK} = s.{PK}", source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )

    return _timed(merge)


RUNNERS: dict[str, Callable[[Case, Path, Path], Run]] = {
    "project-local": run_project_local,
    "project-moto": run_project_moto,
    "orjson-floor": run_orjson_floor,
    "duckdb": run_duckdb,
    "delta-rs": run_delta,
}


def child(tool: str, case: Case, out: Path) -> None:
    folder = case.data_dir
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        run = RUNNERS[tool](case, folder, Path(work))
    out.write_text(json.dumps(asdict(run)))


# ---- the parent: cases, repeats, table ----------------------------------------------------


def available(tool: str) -> bool:
    needs = {"orjson-floor": "orjson", "duckdb": "duckdb", "delta-rs": "deltalake"}
    if tool not in needs:
        return True
    try:
        __import__(needs[tool])
    except ImportError:
        return False
    return True


def run_in_process(tool: str, case: Case) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-out-") as folder:
        out = Path(folder) / "run.json"
        env = {**os.environ, **QUIET}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.merge",
                "--child",
                tool,
                "--case",
                json.dumps(asdict(case)),
                "--out",
                str(out),
                "--data",
                str(DATA),  # the child must read the data this run generated
            ],
            check=True,
            cwd=ROOT.parent,
            env=env,
        )
        return Run(**json.loads(out.read_text()))


def cold_start(repeat: int) -> dict[str, float]:
    """Seconds to import the merge handler, and pydantic + boto3 alone, in fresh processes."""
    statements = {
        "handler": "import services.merge.handler",
        "pydantic+boto3": "import pydantic, boto3",
    }
    found = {}
    for name, statement in statements.items():
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], check=True, cwd=ROOT.parent)
            times.append(time.perf_counter() - started)
        found[name] = statistics.median(times)
    return found


def main(argv: list[str] | None = None) -> int:
    global DATA
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="N=10k cases only (CI)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--out", type=Path, default=ROOT / "results.json")
    parser.add_argument("--data", type=Path, default=DATA, help="where generated data is kept")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    DATA = args.data
    if args.child:
        child(args.child, Case(**json.loads(args.case)), args.out)
        return 0

    cases = SMALL_CASES if args.small else FULL_CASES
    tools = [t for t in args.tools.split(",") if t]
    missing = [t for t in tools if not available(t)]
    if missing:
        print(f"skipped (package not installed: `pip install .[bench]`): {', '.join(missing)}")
        tools = [t for t in tools if t not in missing]
    results = []
    for case in cases:
        started = time.perf_counter()
        prepare(case)
        print(f"prepared {case.name} in {time.perf_counter() - started:.1f}s", flush=True)
        for tool in tools:
            runs = [run_in_process(tool, case) for _ in range(args.repeat)]
            results.append(_summary(case, tool, runs))
            print(f"  {tool}: {results[-1]['median_s']:.3f}s", flush=True)
    starts = cold_start(args.repeat)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(table(results))
    print()
    print(
        f"cold start: import services.merge.handler {starts['handler']:.2f}s, "
        f"pydantic + boto3 alone {starts['pydantic+boto3']:.2f}s "
        f"({starts['handler'] / starts['pydantic+boto3']:.2f}x)"
    )
    print()
    print(retention_table(results))
    for line in targets(results, starts):
        print(line)
    return 0


def _summary(case: Case, tool: str, runs: list[Run]) -> dict[str, Any]:
    last = runs[-1]
    return {
        "case": case.name,
        "tool": tool,
        "n": case.n,
        "k": case.k,
        "shape": case.shape,
        "partitioned": case.partitioned,
        "median_s": round(statistics.median(r.seconds for r in runs), 4),
        "peak_rss_mb": round(max(r.peak_rss_mb for r in runs), 1),
        "s3_requests": last.s3_requests,
        "partitions_rewritten": last.partitions_rewritten,
        "bytes_read": last.bytes_read,
        "bytes_written": last.bytes_written,
        "noncurrent_bytes": last.noncurrent_bytes,
        "latest_written_bytes": last.latest_written_bytes,
        "runs": len(runs),
    }


def table(results: list[dict[str, Any]]) -> str:
    header = (
        "| case | tool | median s | peak RSS MB | S3 requests | read MB | written MB "
        "| time / project | RSS / project |"
    )
    lines = [header, "|" + "---|" * 9]
    reference = {r["case"]: r for r in results if r["tool"] == REFERENCE}
    for r in results:
        ref = reference.get(r["case"])
        time_ratio = f"{r['median_s'] / ref['median_s']:.2f}x" if ref else ""
        rss_ratio = f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x" if ref else ""
        lines.append(
            f"| {r['case']} | {r['tool']} | {r['median_s']:.3f} | {r['peak_rss_mb']:.0f} "
            f"| {_opt(r['s3_requests'])} | {_mb(r['bytes_read'])} | {_mb(r['bytes_written'])} "
            f"| {time_ratio} | {rss_ratio} |"
        )
    return "\n".join(lines)


def _retained_per_day(r: dict[str, Any]) -> int:
    """Noncurrent bytes kept at any time once a day of merges has run: each merge's, for as
    long as latest's lifecycle rule keeps them (its days, plus up to one: S3 counts to the
    next midnight UTC)."""
    from shared import retention

    return int(r["noncurrent_bytes"]) * _merges_per_day() * (retention.READ_WINDOW_DAYS + 1)


def _merges_per_day() -> int:
    from shared import deployment_facts as facts

    return 24 * 60 // facts.INGEST_EVERY_MINUTES


def retention_table(results: list[dict[str, Any]]) -> str:
    """Per case, the project's merge: what it writes and what it leaves noncurrent."""
    lines = [
        "| case | written MB / merge | latest's new MB | noncurrent MB / merge "
        "| noncurrent retained GB |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        if r["tool"] == REFERENCE and r.get("noncurrent_bytes") is not None:
            lines.append(
                f"| {r['case']} | {_mb(r['bytes_written'])} | {_mb(r['latest_written_bytes'])} "
                f"| {_mb(r['noncurrent_bytes'])} | {_retained_per_day(r) / 2**30:.2f} |"
            )
    return "\n".join(lines)


def targets(results: list[dict[str, Any]], starts: dict[str, float]) -> list[str]:
    """The issue's targets, each said met or not, from this run's figures."""
    found = {(r["n"], r["k"], r["shape"], r["partitioned"], r["tool"]): r for r in results}

    def figure(n: int, k: int, shape: str, partitioned: bool, tool: str) -> Any:
        return found.get((n, k, shape, partitioned, tool))

    lines = []

    def check(label: str, ok: bool | None) -> None:
        lines.append(f"[{'n/a' if ok is None else 'met' if ok else 'NOT met'}] {label}")

    ours = figure(1_000_000, 1_000, "clustered", True, REFERENCE)
    delta = figure(1_000_000, 1_000, "clustered", True, "delta-rs")
    duck = figure(1_000_000, 1_000, "clustered", True, "duckdb")
    check(
        "1M/1k clustered: >= 3x faster than delta-rs MERGE",
        ours and delta and delta["median_s"] >= 3 * ours["median_s"],
    )
    check(
        "1M/1k clustered: >= 1.5x faster than DuckDB on Parquet",
        ours and duck and duck["median_s"] >= 1.5 * ours["median_s"],
    )
    check("1M/1k clustered: peak RSS <= 150 MB", ours and ours["peak_rss_mb"] <= 150)
    ours = figure(1_000_000, 10_000, "uniform", True, REFERENCE)
    floor = figure(1_000_000, 10_000, "uniform", True, "orjson-floor")
    check(
        "1M/10k uniform: no slower than the orjson floor",
        ours and floor and ours["median_s"] <= floor["median_s"],
    )
    check("1M/10k uniform: peak RSS <= 300 MB", ours and ours["peak_rss_mb"] <= 300)
    moved = ours and (ours["bytes_read"] + ours["bytes_written"]) / 2**20
    check(
        f"1M/10k uniform: {moved or 0:.0f} MB moved <= a quarter of the "
        f"{BEFORE_COMPRESSION_MB:.0f} MB of uncompressed partitions, in no more time "
        f"({BEFORE_COMPRESSION_S} s)",
        ours and moved <= BEFORE_COMPRESSION_MB / 4 and ours["median_s"] <= BEFORE_COMPRESSION_S,
    )
    ours = figure(100_000, 1_000, "clustered", False, REFERENCE)
    floor = figure(100_000, 1_000, "clustered", False, "orjson-floor")
    check(
        "100k single file: within 1.3x of the orjson floor",
        ours and floor and ours["median_s"] <= 1.3 * floor["median_s"],
    )
    for r in results:
        if r["tool"] == REFERENCE and r["s3_requests"] is not None:
            # docs/merge_protocol.md: 9 for a one-file latest (its schema state's GET
            # included), 9 + 2 per partition rewritten
            budget = 9 + 2 * r["partitions_rewritten"]
            check(
                f"{r['case']}: {r['s3_requests']} S3 requests, <= 9 + 2 x "
                f"{r['partitions_rewritten']} partition(s) rewritten = {budget}",
                r["s3_requests"] <= budget,
            )
    for r in results:
        if r["tool"] == REFERENCE and r["partitioned"] and r.get("noncurrent_bytes") is not None:
            changed = r["latest_written_bytes"]  # the changed partitions and the manifest
            check(
                f"{r['case']}: noncurrent retained {_retained_per_day(r) / 2**20:.0f} MB "
                "<= 2 x the changed partitions' bytes x merges a day",
                _retained_per_day(r) <= 2 * changed * _merges_per_day(),
            )
    check(
        "cold start: handler import <= 1.5x pydantic + boto3",
        starts["handler"] <= 1.5 * starts["pydantic+boto3"],
    )
    return lines


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _mb(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f}"


def _count(value: int) -> str:
    if value >= 1_000_000 and value % 1_000_000 == 0:
        return f"{value // 1_000_000}M"
    if value >= 1_000 and value % 1_000 == 0:
        return f"{value // 1_000}k"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
