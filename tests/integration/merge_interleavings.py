"""An adversary for the merge: black-box interleavings, crashes and throttling at the AWS calls.

Drives the real Lambda entry point (`services.merge.handler.handler`) with the events AWS
sends (an S3 notification as an SQS message body, inside the SQS event Lambda builds), on
moto's S3 (versioned bucket, no notification configuration: this harness builds every event
itself), SQS (the DLQ) and EventBridge. Faults are injected at the AWS-call level only, with
hooks on boto3's default session (registered before the handler builds its clients), so the
harness keeps working whatever the merge's internals become:

- crash (the process dies) BEFORE or AFTER the Nth AWS call of an invocation: from then on
  every call of that invocation raises `ProcessDeath` (a BaseException, so no `except
  Exception` in the merge can swallow it) and its records count as failed;
- pause an invocation (in a thread, as a second Lambda process: a fresh copy of the handler
  module) at its Nth call while another runs to completion (the next batch, a duplicate copy
  of the same message, a redriven copy), then release it;
- both of two invocations crash, then their redeliveries interleave (one paused at call N);
- 503 SlowDown bursts on `latest/` requests (botocore retries; a long burst fails the call);
- a write carried out whose response is lost (S3 did it, the client sees a 500 and botocore
  retries: a conditional write's retry then meets its own first attempt);
- the registry switched to key-range partitions between a commit and its redelivery.

After every case the promise is checked (the numbers are those of the report):

1. every distinct row version that reached staging or baseline is in exactly one of latest
   or history (by canonical text, `shared.rows.row_json`); nothing else is there;
2. latest holds, per key, the version of the latest observation (files by `eventTime`, then
   `sequencer`, or the `observed-at` the ingest set; in a file, by `last_updated`, then file
   order; a log row by its commit position, `_commit_ts` then `_lsn`), and no row for a key
   whose latest observation is a delete (log plans: tombstones, several versions per key);
3. no version (and no delete marker) of `staging/<t>.json` / `baseline/<t>.json` is left;
4. reprocessing changes nothing: (a) every message delivered again, (b) every archive
   replayed (`ops.dismissal.replay`) and its notification delivered, leave every version of
   every object under `latest/` and `history/` as it was (and emit no new `detail.event_id`);
5. a bad file is quarantined (a byte-identical copy under `quarantine/<t>/` and a
   `.report.json`), its message fails or goes to the DLQ, and `handler()` never raises;
6. the history index answers exactly the log's history and totals, equals a full scan once
   every entry is copied, and has every checkpoint at or below latest's entry
   (tests/integration/index_oracle.py; a checkpoint every 2 entries here, leaves of 3 rows).

Time: SQS redelivers a failed record after its visibility timeout (6x the function timeout),
so by then any claim a dead invocation left has expired. Where the merge's settings have a
`lease_seconds` (how long a claimed batch is left to a live twin), an invocation that starts
while no other is live gets lease 0 ("everything left behind is from the dead"), one that
starts while another is live (paused) gets the production value. botocore's retry back-off
does not sleep here.

Run:
    .venv/bin/python -m tests.integration.merge_interleavings quick           # the pytest set
    .venv/bin/python -m tests.integration.merge_interleavings full --seed 7    # run_full(7)
    .venv/bin/python -m tests.integration.merge_interleavings case --plan basic \\
        --fault crash:i2:c7:after -v                                           # one case
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any, cast
from urllib.parse import parse_qs, quote_plus, unquote, urlsplit

import boto3
import botocore.endpoint
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from moto import mock_aws

from services.merge import handler as merge_handler
from shared import history_index
from shared.changes import COMMIT_TS_COLUMN, LSN_COLUMN, OP_COLUMN, XID_COLUMN, lsn_text, lsn_value
from shared.deployment_facts import MAX_RECEIVE_COUNT
from shared.naming import merge_dlq_name, merge_queue_name
from shared.observation import OBSERVED_METADATA, Observation
from shared.reader import iter_history, read_latest
from shared.rows import dump_rows, row_json
from shared.schemas import RowModel, Staff
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.index_oracle import index_problems


def _optional(module: str, name: str) -> Any:
    """`module.name`, or None where it cannot be imported (other code may be mid-change)."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


REGION = "eu-west-2"
ACCOUNT = "123456789012"
BUCKET = "ingest-interleavings"
BUS = "ingest-interleavings-bus"
T0 = datetime(2024, 11, 14, 9, 0, 0)
MAX_RECEIVES = MAX_RECEIVE_COUNT  # then SQS moves the message to the DLQ
PAUSE_TIMEOUT = 60.0  # seconds a paused invocation waits for its release (a harness bug)
SEQUENCER_BASE = 0x0055AED6DCD9000000
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


class ProcessDeath(BaseException):
    """The Lambda process died here (injected). A BaseException: nothing in the merge may
    catch it and carry on as if the process were still alive."""


def staging_key(table: str) -> str:
    return f"staging/{table}.json"


def baseline_key(table: str) -> str:
    return f"baseline/{table}.json"


# ---- rows ----------------------------------------------------------------------------------


def staff(key: int, minutes: float, tag: str) -> Staff:
    """A staff row; `tag` (the first name) makes each version's content unique."""
    return Staff(
        staff_id=key,
        first_name=tag,
        last_name="Franey",
        department_id=2,
        email_address=f"s{key}@terrifictotes.com",
        created_at=T0 - timedelta(days=1),
        last_updated=T0 + timedelta(minutes=minutes),
    )


def short(table: str, text: str) -> str:
    """A version's text, shortened for reports: key, tag and last_updated."""
    try:
        row = json.loads(text)
    except ValueError:
        return text[:80]
    key = row.get(TABLES[table].primary_key)
    tag = row.get("first_name", "")
    return f"k{key}:{tag}@{str(row.get('last_updated', ''))[11:16]}"


def bad_copy(table: str, rows: Sequence[RowModel], field_name: str, value: Any) -> bytes:
    """The rows as JSON with `field_name` of the first row set to `value` (valid JSON the
    schema must refuse)."""
    spec = TABLES[table]
    raw = [json.loads(row_json(spec, r)) for r in rows]
    raw[0][field_name] = value
    return json.dumps(raw).encode()


# ---- scenarios: files and steps --------------------------------------------------------------


@dataclass
class FileSpec:
    area: str  # "staging" | "baseline"
    data: bytes
    rows: list[RowModel] | None  # None: a bad file (to be quarantined)
    note: str = ""
    changes: list[dict[str, Any]] | None = None  # a log file: its changes, in commit order
    metadata: dict[str, str] = field(default_factory=dict)  # e.g. the ingest's observed-at


@dataclass(frozen=True)
class Step:
    kind: str  # "put" (files = (i,)) | "deliver" (files = the uploads of one SQS batch)
    files: tuple[int, ...]


@dataclass
class Plan:
    name: str
    files: list[FileSpec]
    steps: list[Step]
    table: str = "staff"
    partitions: int | None = None  # rows_per_partition throughout (None: one file)

    @property
    def invocations(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "deliver"]

    def describe(self) -> str:
        lines = [f"plan {self.name} (table {self.table}, partitions {self.partitions})"]
        for i, f in enumerate(self.files):
            lines.append(f"  f{i} {f.area}: {f.note}")
        order, n = [], 0
        for s in self.steps:
            if s.kind == "put":
                order.append(f"put f{s.files[0]}")
            else:
                n += 1
                order.append(f"i{n}=deliver[{','.join(f'f{i}' for i in s.files)}]")
        lines.append("  steps: " + "; ".join(order))
        return "\n".join(lines)


class FileBuilder:
    """Builds files in observation order, each key's versions with unique content: a version,
    once superseded, never comes back (no real reverts), so text identity is enough."""

    def __init__(self, table: str = "staff") -> None:
        self.table = table
        self.current: dict[int, Staff] = {}
        self.count = 0
        self.files: list[FileSpec] = []

    def fresh(self, key: int, minutes: float) -> Staff:
        self.count += 1
        return staff(key, minutes, f"k{key}v{self.count}")

    def now_of(self, key: int) -> float:
        row = self.current[key]
        return (row.last_updated - T0).total_seconds() / 60

    def file(self, area: str, changes: list[tuple[str, int]], rng: random.Random) -> int:
        """One file: per (kind, key) the versions that kind stages. Kinds: insert, update,
        late (older last_updated), silent (same last_updated, other content), dup (2-3
        versions of the key in the file), tie (two versions with one last_updated: the later
        in file order wins), reseen (the current version again, alone)."""
        rows: list[Staff] = []
        notes = []
        for kind, key in changes:
            new: list[Staff] = []
            if kind == "insert":
                new = [self.fresh(key, rng.randint(0, 5))]
            elif kind == "update":
                new = [self.fresh(key, self.now_of(key) + rng.randint(5, 30))]
            elif kind == "late":
                new = [self.fresh(key, self.now_of(key) - rng.randint(5, 30))]
            elif kind == "silent":
                new = [self.fresh(key, self.now_of(key))]
            elif kind == "dup":
                base = self.now_of(key) if key in self.current else 0
                new = [self.fresh(key, base + rng.randint(1, 40)) for _ in range(rng.randint(2, 3))]
            elif kind == "tie":
                at = (self.now_of(key) if key in self.current else 0) + rng.randint(1, 9)
                new = [self.fresh(key, at), self.fresh(key, at)]
            elif kind == "reseen":
                rows.append(self.current[key])
                notes.append(f"k{key} reseen {self.current[key].first_name}")
                continue
            else:
                raise ValueError(kind)
            rows.extend(new)
            notes.append(f"k{key} {kind} " + ",".join(_tag(r) for r in new))
        rng.shuffle(rows)
        for key in {r.staff_id for r in rows}:  # the file's version of each key
            ordered = sorted(
                (r for r in rows if r.staff_id == key), key=lambda r: r.last_updated
            )  # stable: file order breaks ties
            self.current[key] = ordered[-1]
        spec = TABLES[self.table]
        note = "; ".join(notes) or "[] (empty)"
        self.files.append(FileSpec(area, dump_rows(spec, rows), list(rows), note))
        return len(self.files) - 1

    def bad(self, rng: random.Random) -> int:
        """A file with a fresh row whose department_id is a string: to be quarantined."""
        key = rng.choice(sorted(self.current) or [1])
        self.count += 1
        row = staff(key, 999, f"bad{self.count}")
        data = bad_copy(self.table, [row], "department_id", "two")
        self.files.append(FileSpec("staging", data, None, f"BAD k{key} department_id='two'"))
        return len(self.files) - 1


def _log_event(change: dict[str, Any]) -> tuple[int, str | None]:
    """A staged log change's key and version text (None: a delete)."""
    key = int(change["staff_id"])
    if change[OP_COLUMN] == "delete":
        return key, None
    row = Staff.model_validate({k: v for k, v in change.items() if not k.startswith("_")})
    return key, row_json(TABLES["staff"], row)


def _log_observation(change: dict[str, Any]) -> Observation:
    at = datetime.fromisoformat(change[COMMIT_TS_COLUMN])
    return Observation(at, lsn_value(change[LSN_COLUMN]))


class LogBuilder:
    """Log-mode files (as the log-capture ingest stages them): a source history of inserts,
    updates, deletes and re-inserts in commit order, each version with unique content."""

    def __init__(self) -> None:
        self.live: dict[int, Staff] = {}
        self.count = 0
        self.minute = 10  # commits start after the baseline's read (T0)
        self.files: list[FileSpec] = []

    def baseline(self, keys: int) -> int:
        rows = [staff(k, 0, f"k{k}base") for k in range(1, keys + 1)]
        self.live = {r.staff_id: r for r in rows}
        metadata = {OBSERVED_METADATA: Observation(T0).text}  # read at T0 by the DB clock
        note = "baseline observed at T0: " + ",".join(r.first_name for r in rows)
        self.files.append(
            FileSpec(
                "baseline",
                dump_rows(TABLES["staff"], rows),
                list[RowModel](rows),
                note,
                None,
                metadata,
            )
        )
        return len(self.files) - 1

    def change(self, kind: str, key: int, xid: int) -> dict[str, Any]:
        """One change (insert, update, delete) of `key`, committed at the next minute."""
        self.minute += 1
        self.count += 1
        commit = T0 + timedelta(minutes=self.minute)
        meta = {
            OP_COLUMN: kind,
            COMMIT_TS_COLUMN: commit.isoformat(timespec="microseconds"),
            LSN_COLUMN: lsn_text(0x16_B374_0000 + self.count * 0x100),
            XID_COLUMN: xid,
        }
        if kind == "delete":
            self.live.pop(key)
            return {"staff_id": key, **meta}
        row = staff(key, self.minute, f"k{key}L{self.count}")
        self.live[key] = row
        return {**json.loads(row_json(TABLES["staff"], row)), **meta}

    def file(self, changes: list[dict[str, Any]]) -> int:
        data = ("[\n" + ",\n".join(json.dumps(c) for c in changes) + "\n]\n").encode()
        notes = [
            f"k{c['staff_id']} {c[OP_COLUMN]} {c.get('first_name', '')}".rstrip() for c in changes
        ]
        self.files.append(FileSpec("staging", data, [], "log: " + "; ".join(notes), changes))
        return len(self.files) - 1

    def again(self, index: int) -> int:
        """The same changes staged again (the ingest re-peeked after a crash): a new batch."""
        spec = self.files[index]
        self.files.append(replace(spec, note=f"again f{index}: {spec.note}"))
        return len(self.files) - 1

    def random_changes(self, rng: random.Random, count: int, xid: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            key = rng.randint(1, 5)
            kind = rng.choice(["update", "update", "delete"]) if key in self.live else "insert"
            out.append(self.change(kind, key, xid))
        return out


def plan_log(seed: int = 1) -> Plan:
    """Log mode: a polled baseline, then log files with several versions per key, deletes
    and re-inserts, delivered out of commit order, and one file staged twice (a re-peek)."""
    b = LogBuilder()
    f0 = b.baseline(3)
    f1 = b.file(
        [
            b.change("update", 1, 801),
            b.change("update", 1, 802),
            b.change("delete", 2, 803),
            b.change("insert", 4, 804),
            b.change("delete", 3, 805),
            b.change("insert", 3, 805),  # one transaction: delete, then re-insert
        ]
    )
    f2 = b.file(
        [b.change("update", 1, 806), b.change("delete", 4, 807), b.change("insert", 2, 808)]
    )
    f3 = b.file([b.change("delete", 1, 809), b.change("update", 3, 810)])
    f4 = b.again(f1)
    steps = [_put(f0), _deliver(f0), _put(f1), _put(f2), _deliver(f2), _deliver(f1)]
    steps += [_put(f3), _deliver(f3), _put(f4), _deliver(f4)]
    return Plan("log", b.files, steps)


def plan_log_generated(seed: int, number: int = 0) -> Plan:
    """A random log plan: a baseline, 2-4 log files of random changes (several per key,
    deletes, re-inserts, shared transactions), maybe one staged twice; delivered out of
    order in batches of 1-2."""
    rng = random.Random(f"log:{seed}:{number}")
    b = LogBuilder()
    files = [b.baseline(rng.randint(2, 4))]
    for n in range(rng.randint(2, 4)):
        files.append(b.file(b.random_changes(rng, rng.randint(2, 6), 900 + n)))
    if rng.random() < 0.5:
        files.append(b.again(rng.choice(files[1:])))
    steps: list[Step] = [_put(files[0]), _deliver(files[0])]
    rest = files[1:]
    for i in rest:
        steps.append(_put(i))
    rng.shuffle(rest)
    while rest:
        size = rng.randint(1, min(2, len(rest)))
        steps.append(_deliver(*rest[:size]))
        rest = rest[size:]
    partitions = rng.choice([None, 2])
    return Plan(f"log-{seed}-{number}", b.files, steps, partitions=partitions)


def _tag(row: Staff) -> str:
    return f"{row.first_name}@{row.last_updated:%H:%M}"


def _put(i: int) -> Step:
    return Step("put", (i,))


def _deliver(*files: int) -> Step:
    return Step("deliver", tuple(files))


def plan_basic(seed: int = 1) -> Plan:
    """Inserts, updates, an in-file duplicate, an overlap re-read, an empty file, a baseline,
    the staging key overwritten before its message is delivered and the later upload
    delivered first: no late rows or silent edits (last_updated order = observation order)."""
    rng = random.Random(f"basic:{seed}")
    b = FileBuilder()
    f0 = b.file("baseline", [("insert", 1), ("insert", 2), ("insert", 3)], rng)
    f1 = b.file("staging", [("update", 1), ("insert", 4), ("dup", 2)], rng)
    f2 = b.file("staging", [("update", 3), ("reseen", 4)], rng)
    f3 = b.file("staging", [], rng)
    steps = [_put(f0), _deliver(f0), _put(f1), _put(f2), _deliver(f2), _deliver(f1)]
    steps += [_put(f3), _deliver(f3)]
    return Plan("basic", b.files, steps)


def plan_observation(seed: int = 1) -> Plan:
    """Versions ordered by observation, not last_updated: a late row and silent edits in a
    later file, an in-file tie, delivered in reverse observation order in one batch."""
    rng = random.Random(f"observation:{seed}")
    b = FileBuilder()
    f0 = b.file("baseline", [("insert", 1), ("insert", 2)], rng)
    f1 = b.file("staging", [("update", 1), ("silent", 2)], rng)
    f2 = b.file("staging", [("late", 1), ("silent", 2), ("tie", 3)], rng)
    steps = [_put(f0), _deliver(f0), _put(f1), _put(f2), _deliver(f2, f1)]
    return Plan("observation", b.files, steps)


def plan_switch(seed: int = 1) -> Plan:
    """For the layout switch: a baseline and two batches, on a single-file latest."""
    rng = random.Random(f"switch:{seed}")
    b = FileBuilder()
    f0 = b.file("baseline", [("insert", 1), ("insert", 2), ("insert", 3)], rng)
    f1 = b.file("staging", [("update", 1), ("insert", 4), ("insert", 5)], rng)
    f2 = b.file("staging", [("update", 2), ("update", 4), ("insert", 6)], rng)
    steps = [_put(f0), _deliver(f0), _put(f1), _deliver(f1), _put(f2), _deliver(f2)]
    return Plan("switch", b.files, steps)


def plan_bad(seed: int = 1) -> Plan:
    """A bad file between two good ones (quarantine, then the merges go on)."""
    rng = random.Random(f"bad:{seed}")
    b = FileBuilder()
    f0 = b.file("baseline", [("insert", 1), ("insert", 2)], rng)
    f1 = b.bad(rng)
    f2 = b.file("staging", [("update", 1), ("insert", 3)], rng)
    steps = [_put(f0), _deliver(f0), _put(f1), _deliver(f1), _put(f2), _deliver(f2)]
    return Plan("bad", b.files, steps)


def plan_generated(seed: int, number: int = 0) -> Plan:
    """A random plan: 3-7 files of 2-6 keys mixing every kind of change, an empty file, maybe
    a bad one; deliveries out of order, in batches of 1-3, the key overwritten meanwhile."""
    rng = random.Random(f"generated:{seed}:{number}")
    b = FileBuilder()
    keys = rng.randint(2, 5)
    files = [b.file("baseline", [("insert", k) for k in range(1, keys + 1)], rng)]
    next_key = keys + 1
    for _ in range(rng.randint(2, 6)):
        roll = rng.random()
        if roll < 0.1:
            files.append(b.file("staging", [], rng))
            continue
        if roll < 0.18:
            files.append(b.bad(rng))
            continue
        changes: list[tuple[str, int]] = []
        for key in rng.sample(sorted(b.current), k=rng.randint(1, min(3, len(b.current)))):
            kind = rng.choice(["update", "update", "late", "silent", "dup", "tie", "reseen"])
            changes.append((kind, key))
        if rng.random() < 0.5:
            changes.append((rng.choice(["insert", "dup", "tie"]), next_key))
            next_key += 1
        files.append(b.file("staging", changes, rng))
    steps: list[Step] = []
    waiting: list[int] = []
    for i in files:
        steps.append(_put(i))
        waiting.append(i)
        if rng.random() < 0.6:  # deliver now; else the key is overwritten first
            rng.shuffle(waiting)  # out of order
            while waiting:
                size = rng.randint(1, min(3, len(waiting)))
                steps.append(_deliver(*waiting[:size]))
                waiting = waiting[size:]
    rng.shuffle(waiting)
    if waiting:
        steps.append(_deliver(*waiting))
    partitions = rng.choice([None, 2])
    return Plan(f"generated-{seed}-{number}", b.files, steps, partitions=partitions)


PLANS: dict[str, Callable[[int], Plan]] = {
    "basic": plan_basic,
    "observation": plan_observation,
    "switch": plan_switch,
    "bad": plan_bad,
    "log": plan_log,
}


def plan_named(name: str, seed: int) -> Plan:
    if name.startswith("generated-"):
        _, s, n = name.split("-")
        return plan_generated(int(s), int(n))
    if name.startswith("log-"):
        _, s, n = name.split("-")
        return plan_log_generated(int(s), int(n))
    return PLANS[name](seed)


# ---- faults --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """What goes wrong in plan invocation `target` (1-based): see `label` for the syntax."""

    kind: str = "none"  # none | crash | pause | crash-pause | slowdown | switch | lost
    target: int = 0
    call: int = 0
    after: bool = False
    other: str = ""  # pause / crash-pause: next | dup | redrive
    call2: int = 0  # crash-pause: B's crash
    after2: bool = False
    call3: int = 0  # crash-pause: the redelivered A paused at this call
    burst: int = 0  # slowdown: this many 503s from the `call`-th request to latest/
    redeliver: str = "now"  # a crashed batch redelivered at once, or at the "end"

    @property
    def label(self) -> str:
        ba = "after" if self.after else "before"
        if self.kind == "none":
            return "none"
        if self.kind in ("crash", "switch"):
            tail = "" if self.redeliver == "now" else ":end"
            return f"{self.kind}:i{self.target}:c{self.call}:{ba}{tail}"
        if self.kind == "pause":
            return f"pause:i{self.target}:c{self.call}:{ba}:{self.other}"
        if self.kind == "crash-pause":
            ba2 = "after" if self.after2 else "before"
            return (
                f"crash-pause:i{self.target}:c{self.call}:{ba}:{self.other}:c{self.call2}:{ba2}"
                f":c{self.call3}"
            )
        if self.kind == "slowdown":
            return f"slowdown:i{self.target}:r{self.call}:x{self.burst}"
        if self.kind == "lost":
            return f"lost:i{self.target}:c{self.call}"
        raise ValueError(self.kind)

    @classmethod
    def parse(cls, label: str) -> Fault:
        parts = label.split(":")
        kind = parts[0]
        if kind == "none":
            return cls()
        target = int(parts[1].lstrip("i"))
        if kind in ("crash", "switch"):
            redeliver = parts[4] if len(parts) > 4 else "now"
            return cls(kind, target, int(parts[2][1:]), parts[3] == "after", redeliver=redeliver)
        if kind == "pause":
            return cls(kind, target, int(parts[2][1:]), parts[3] == "after", other=parts[4])
        if kind == "crash-pause":
            return cls(
                kind,
                target,
                int(parts[2][1:]),
                parts[3] == "after",
                other=parts[4],
                call2=int(parts[5][1:]),
                after2=parts[6] == "after",
                call3=int(parts[7][1:]),
            )
        if kind == "slowdown":
            return cls(kind, target, int(parts[2][1:]), burst=int(parts[3][1:]))
        if kind == "lost":
            return cls(kind, target, int(parts[2][1:]))
        raise ValueError(label)


# ---- one Lambda invocation as the hooks see it -----------------------------------------------


@dataclass
class SlowDown:
    """503 SlowDown to requests under `prefix` (methods: None = any), attempts start..start+n-1
    (counted over the matching attempts of the invocation, botocore's retries included)."""

    start: int = 1
    count: int = 1
    prefix: str = "latest/"
    methods: frozenset[str] | None = None
    seen: int = 0
    answered: int = 0


class Invocation:
    """The AWS calls of one invocation (one Lambda process at a time), and its faults."""

    def __init__(
        self,
        label: str,
        crash_at: int | None = None,
        crash_after: bool = False,
        pause_at: int | None = None,
        pause_after: bool = False,
        slow: SlowDown | None = None,
        deny_missing_versions: bool = False,
        lost_at: int | None = None,
    ) -> None:
        self.label = label
        self.lost_at = lost_at  # this call is carried out, its response lost (500, retried)
        self.lost_done = False
        self.crash_at = crash_at
        self.crash_after = crash_after
        self.pause_at = pause_at
        self.pause_after = pause_after
        self.slow = slow
        self.deny_missing_versions = deny_missing_versions
        self.calls: list[str] = []
        self.dead: str | None = None  # why the process died
        self.paused = threading.Event()
        self.release = threading.Event()
        self.events: list[dict[str, Any]] = []  # PutEvents entries accepted

    def die(self, why: str) -> ProcessDeath:
        self.dead = why
        return ProcessDeath(f"{self.label}: {why}")

    def pause(self) -> None:
        self.paused.set()
        if not self.release.wait(PAUSE_TIMEOUT):
            raise self.die("never released (harness timeout)")


def _call_text(model: Any, params: dict[str, Any]) -> str:
    service = model.service_model.service_name
    text = f"{service}.{model.name}"
    if service != "s3":
        return text
    url = urlsplit(params.get("url", ""))
    key = unquote(url.path.lstrip("/"))
    if key.startswith(BUCKET + "/"):
        key = key[len(BUCKET) + 1 :]
    query = parse_qs(url.query)
    extra = []
    if "versionId" in query:
        extra.append("v=" + query["versionId"][0][:6])
    headers = {k.lower(): v for k, v in (params.get("headers") or {}).items()}
    if "if-match" in headers:
        extra.append("if-match")
    if "if-none-match" in headers:
        extra.append("if-none-match")
    if "prefix" in query:
        key = f"?prefix={query['prefix'][0]}"
    return " ".join([text, key, *extra]).rstrip()


ANSWERED_URL = "https://answered-by-the-harness.invalid/"  # a URL moto serves nothing at


def _answer(request: Any, status: int, body: bytes = b"", *, execute: bool = False) -> AWSResponse:
    """A response S3 could send, given to botocore instead of moto's (from a before-send hook
    registered first). botocore runs every before-send hook, moto's too, so the request is
    then pointed where moto does nothing: not carried out (a 503 SlowDown), or carried out
    here first (`execute`: the call happened, its response was lost)."""

    class _Raw:
        def stream(self, **_: Any) -> Any:
            yield body

        def read(self, *_: Any) -> bytes:
            return body

    if execute:
        from moto.core.models import botocore_stubber

        botocore_stubber("before-send", request)
    response = AWSResponse(request.url, status, HTTPHeaders(), _Raw())
    request.url = ANSWERED_URL
    return response


def _bucket_key(url: Any) -> str | None:
    """The key an S3 request to the bucket names (virtual-hosted or path style), else None."""
    path = unquote(url.path.lstrip("/"))
    if url.netloc.startswith(BUCKET + "."):
        return path
    if "s3" in url.netloc and path.startswith(BUCKET + "/"):
        return path[len(BUCKET) + 1 :]
    return None


class _NoSleepTime:
    """botocore.endpoint's `time`, without the retry back-off's sleep."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(_seconds: float) -> None:
        return None


# ---- messages ------------------------------------------------------------------------------


@dataclass
class Upload:
    index: int  # the plan's file number (-1: a replay)
    area: str
    key: str
    data: bytes
    rows: list[RowModel] | None
    version_id: str
    etag: str
    event_time: str
    sequencer: str
    body: str  # the S3 notification, as SQS holds it
    changes: list[dict[str, Any]] | None = None  # a log file's changes
    observed_at: str | None = None  # the ingest's `observed-at` metadata

    @property
    def order(self) -> tuple[str, int]:
        return (self.event_time, int(self.sequencer, 16))

    @property
    def observation(self) -> Observation:
        """When the merge observes this file's polled rows."""
        if self.observed_at:
            return Observation.parse(self.observed_at)
        return Observation.of_upload(self.event_time, self.sequencer, datetime.now(UTC))


@dataclass
class Message:
    id: str
    body: str
    origin: str  # for reports: "f2", "f2 dup", "f2 redrive", "replay ..."
    receives: int = 0
    sent_ms: int = 0
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    failed: list[Message]
    died: str | None = None
    raised: str | None = None  # an exception out of handler() other than "all records failed"
    calls: list[str] = field(default_factory=list)
    reached: bool = True  # the fault's call was reached


@dataclass
class Violation:
    contract: str  # "1".."5", "run" (stuck / harness)
    text: str

    def __str__(self) -> str:
        return f"[{self.contract}] {self.text}"


@dataclass
class LambdaContext:
    function_name: str = "ingest-merge-staff"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ingest-merge-staff"
    aws_request_id: str = "req"

    def get_remaining_time_in_millis(self) -> int:
        return 600_000


# ---- the world: moto, the hooks, the handler's processes -------------------------------------


class World:
    """One moto account with the bucket, DLQ and bus; the hooks on boto3's default session;
    the handler module (process 1) and a copy of it (process 2, for concurrent invocations)."""

    def __init__(self, table: str = "staff", partitions: int | None = None, seed: str = "0"):
        self.table = table
        self.partitions = partitions
        self.rng = random.Random(f"world:{seed}")
        self.uploads: list[Upload] = []
        self.messages: list[Message] = []  # every first delivery of an upload
        self.sqs_dead: list[Message] = []  # failed MAX_RECEIVES times: moved to the DLQ by SQS
        self.dlq_bodies: list[str] = []  # what the merge itself sent to its DLQ
        self.emitted: Counter[str] = Counter()  # detail.event_id of every accepted event
        self.raised: list[str] = []
        self.log: list[str] = []
        self.replay_notes: list[str] = []
        self._bound: dict[int, Invocation] = {}
        self._active: list[Invocation] = []
        self._lock = threading.Lock()
        self._last_time = datetime(2000, 1, 1, tzinfo=UTC)
        self._sequencers: Counter[str] = Counter()
        self._stack = contextlib.ExitStack()
        self._processes: dict[int, dict[str, Any]] = {}
        self.twin: ModuleType | None = None

    # -- setup -------------------------------------------------------------------------------

    def __enter__(self) -> World:
        stack = self._stack
        try:
            self._enter(stack)
        except BaseException:
            stack.close()
            raise
        return self

    def _enter(self, stack: contextlib.ExitStack) -> None:
        env = {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "BUCKET_NAME": BUCKET,
            "TABLE_NAME": self.table,
            "EVENT_BUS_NAME": BUS,
            "POWERTOOLS_METRICS_NAMESPACE": "IngestBucket",
        }
        saved = {k: os.environ.get(k) for k in [*env, "DLQ_URL", "AWS_ENDPOINT_URL"]}
        stack.callback(_restore_env, saved)
        os.environ.update(env)
        os.environ.pop("AWS_ENDPOINT_URL", None)
        stack.enter_context(mock_aws())
        stack.enter_context(_atomic_conditional_puts())
        if self.partitions is not None:
            stack.enter_context(_partitions(self.table, self.partitions))
        stack.enter_context(_small_index())
        previous_time = getattr(botocore.endpoint, "time")  # noqa: B009
        setattr(botocore.endpoint, "time", _NoSleepTime())  # noqa: B010
        stack.callback(setattr, botocore.endpoint, "time", previous_time)
        logging.disable(logging.WARNING)  # errors still reach the capture below
        stack.callback(logging.disable, logging.NOTSET)
        merge_log = logging.getLogger(os.environ.get("POWERTOOLS_SERVICE_NAME") or "merge")
        saved_handlers = list(merge_log.handlers)
        merge_log.handlers = [_Capture(self)]
        stack.callback(setattr, merge_log, "handlers", saved_handlers)
        stack.enter_context(contextlib.redirect_stdout(_Sink()))  # metrics are printed

        # the harness's own clients: another session, so no hook sees them
        own, hooked = _sessions()
        self.s3 = own.client("s3")
        self.sqs = own.client("sqs")
        self.events_client = own.client("events")
        self.s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.dlq_url = self.sqs.create_queue(QueueName=merge_dlq_name(self.table))["QueueUrl"]
        self.queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{merge_queue_name(self.table)}"
        self.events_client.create_event_bus(Name=BUS)
        os.environ["DLQ_URL"] = self.dlq_url

        # the handler's session (boto3's default): its hooks were registered before any of
        # its clients was made; they call this world's methods while it is the current one
        previous_session = boto3.DEFAULT_SESSION
        stack.callback(setattr, boto3, "DEFAULT_SESSION", previous_session)
        boto3.DEFAULT_SESSION = hooked
        _ROUTER.world = self
        stack.callback(setattr, _ROUTER, "world", None)
        self.twin = _load_twin_handler()
        for module in (merge_handler, self.twin):
            module.use_service(None)
            stack.callback(module.use_service, None)

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def switch_partitions(self, rows_per_partition: int | None) -> None:
        """The registry changed (a deploy): the table partitioned from now on."""
        self._stack.enter_context(_partitions(self.table, rows_per_partition))
        self.log.append(f"registry: {self.table} rows_per_partition={rows_per_partition}")

    # -- the hooks ---------------------------------------------------------------------------

    def _current(self) -> Invocation | None:
        with self._lock:
            found = self._bound.get(threading.get_ident())
            if found is not None:
                return found
            running = [i for i in self._active if not i.paused.is_set() or i.release.is_set()]
            return running[0] if len(running) == 1 else None

    def _before_call(self, model: Any, params: dict[str, Any], context: Any, **_: Any) -> None:
        inv = self._current()
        if inv is None:
            return None
        if inv.dead:
            raise ProcessDeath(f"{inv.label}: already dead ({inv.dead})")
        text = _call_text(model, params)
        inv.calls.append(text)
        number = len(inv.calls)
        if isinstance(context, dict):
            context["harness_call"] = (inv, number)
            if model.name == "PutEvents":
                with contextlib.suppress(Exception):
                    context["harness_entries"] = json.loads(params["body"])["Entries"]
        if inv.pause_at == number and not inv.pause_after:
            inv.pause()
        if inv.crash_at == number and not inv.crash_after:
            raise inv.die(f"crash before call {number} ({text})")
        return None

    def _after_call(
        self, http_response: Any, parsed: Any, model: Any, context: Any, **_: Any
    ) -> None:
        found = context.get("harness_call") if isinstance(context, dict) else None
        if found is None:
            return
        inv, number = found
        status = getattr(http_response, "status_code", 0)
        if status >= 300:
            inv.calls[number - 1] += f" -> {status}"
        if model.name == "PutEvents" and status < 300:
            entries = context.get("harness_entries") or []
            results = (parsed or {}).get("Entries") or []
            for i, entry in enumerate(entries):
                result = results[i] if i < len(results) else {}
                if result.get("ErrorCode"):
                    continue
                inv.events.append(entry)
                with contextlib.suppress(Exception):
                    self.emitted[json.loads(entry["Detail"])["event_id"]] += 1
        if inv.pause_at == number and inv.pause_after:
            inv.pause()
        if inv.crash_at == number and inv.crash_after:
            raise inv.die(f"crash after call {number} ({inv.calls[number - 1]})")

    def _after_call_error(self, context: Any, **_: Any) -> None:
        found = context.get("harness_call") if isinstance(context, dict) else None
        if found is not None:
            inv, number = found
            if inv.crash_at == number and inv.crash_after:
                raise inv.die(f"crash after call {number} ({inv.calls[number - 1]}, it failed)")

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        inv = self._current()
        if inv is None:
            return None
        url = urlsplit(request.url)
        key = _bucket_key(url)
        if key is None:
            return None  # only requests to the bucket are answered here, or lost
        if inv.lost_at == len(inv.calls) and not inv.lost_done:
            inv.lost_done = True
            inv.calls[-1] += " (done, 500)"
            return _answer(request, 500, INTERNAL_ERROR, execute=True)
        slow = inv.slow
        if (
            slow
            and key.startswith(slow.prefix)
            and (slow.methods is None or request.method in slow.methods)
        ):
            slow.seen += 1
            if slow.start <= slow.seen < slow.start + slow.count:
                slow.answered += 1
                with contextlib.suppress(IndexError):
                    inv.calls[-1] += " (503)"
                return _answer(request, 503, SLOW_DOWN)
        if inv.deny_missing_versions and request.method in ("GET", "HEAD"):
            version = parse_qs(url.query).get("versionId")
            if version and not self.version_exists(key, version[0]):
                return _answer(request, 403, b"" if request.method == "HEAD" else ACCESS_DENIED)
        return None

    def version_exists(self, key: str, version_id: str) -> bool:
        listing = self.s3.list_object_versions(Bucket=BUCKET, Prefix=key)
        return any(
            v["Key"] == key and v["VersionId"] == version_id for v in listing.get("Versions", [])
        )

    # -- uploads and messages ----------------------------------------------------------------

    def _event_time(self) -> str:
        now = max(datetime.now(UTC), self._last_time + timedelta(milliseconds=1))
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        self._last_time = now
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"

    def put(self, index: int, spec: FileSpec) -> Upload:
        key = baseline_key(self.table) if spec.area == "baseline" else staging_key(self.table)
        put = self.s3.put_object(Bucket=BUCKET, Key=key, Body=spec.data, Metadata=spec.metadata)
        upload = self.notify(index, spec.area, key, spec.data, spec.rows, put)
        upload.changes = spec.changes
        upload.observed_at = spec.metadata.get(OBSERVED_METADATA)
        self.log.append(f"put f{index} -> {key} v={upload.version_id[:6]}")
        return upload

    def notify(
        self,
        index: int,
        area: str,
        key: str,
        data: bytes,
        rows: list[RowModel] | None,
        put: dict[str, Any],
    ) -> Upload:
        """The S3 event of a PutObject, as AWS would send it to SQS."""
        self._sequencers[key] += 1
        sequencer = f"{SEQUENCER_BASE + self._sequencers[key] * 0x100:018X}"
        event_time = self._event_time()
        version_id = put["VersionId"]
        etag = put["ETag"].strip('"')
        body = json.dumps(
            {
                "Records": [
                    {
                        "eventVersion": "2.1",
                        "eventSource": "aws:s3",
                        "awsRegion": REGION,
                        "eventTime": event_time,
                        "eventName": "ObjectCreated:Put",
                        "userIdentity": {"principalId": "AWS:AROAEXAMPLE:ingest"},
                        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
                        "responseElements": {
                            "x-amz-request-id": self._hex(16).upper(),
                            "x-amz-id-2": self._hex(64),
                        },
                        "s3": {
                            "s3SchemaVersion": "1.0",
                            "configurationId": f"{area}-{self.table}",
                            "bucket": {
                                "name": BUCKET,
                                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                                "arn": f"arn:aws:s3:::{BUCKET}",
                            },
                            "object": {
                                "key": quote_plus(key, safe="/"),
                                "size": len(data),
                                "eTag": etag,
                                "versionId": version_id,
                                "sequencer": sequencer,
                            },
                        },
                    }
                ]
            }
        )
        upload = Upload(index, area, key, data, rows, version_id, etag, event_time, sequencer, body)
        self.uploads.append(upload)
        return upload

    def _hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def message(self, body: str, origin: str, *, first: bool = False, **attributes: str) -> Message:
        """A new SQS message (its own messageId) carrying `body`."""
        m = Message(
            id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            body=body,
            origin=origin,
            sent_ms=int(time.time() * 1000),
            attributes=dict(attributes),
        )
        if first:
            self.messages.append(m)
        return m

    def first_message(self, upload: Upload) -> Message:
        return self.message(upload.body, f"f{upload.index}", first=True)

    def lambda_event(self, messages: list[Message]) -> dict[str, Any]:
        records = []
        for m in messages:
            m.receives += 1
            attributes = {
                "ApproximateReceiveCount": str(m.receives),
                "SentTimestamp": str(m.sent_ms),
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": str(m.sent_ms + 17),
                **m.attributes,
            }
            records.append(
                {
                    "messageId": m.id,
                    "receiptHandle": f"AQEB{self._hex(40)}",
                    "body": m.body,
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": hashlib.md5(m.body.encode()).hexdigest(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": REGION,
                }
            )
        return {"Records": records}

    # -- invoking ----------------------------------------------------------------------------

    def _prepare(self, module: ModuleType, live: bool) -> None:
        """A cold start after a death; the lease for a twin that is live or not (see the
        module docstring)."""
        state = self._processes.setdefault(id(module), {"cold": True, "lease": None})
        settings_type = getattr(module, "MergeSettings", None)
        fields = getattr(settings_type, "model_fields", {})
        want = None
        if "lease_seconds" in fields:
            default = fields["lease_seconds"].default
            want = default if live else 0.0
        if not state["cold"] and state["lease"] == want:
            return
        module.use_service(None)
        if want is not None and hasattr(module, "build_service"):
            settings = settings_type.from_env().model_copy(update={"lease_seconds": want})  # type: ignore[union-attr]
            module.use_service(module.build_service(settings))
        state.update(cold=False, lease=want)

    def invoke(
        self, messages: list[Message], inv: Invocation, module: ModuleType | None = None
    ) -> Outcome:
        """One Lambda invocation of these messages; the records that failed."""
        module = module or merge_handler
        with self._lock:
            live = bool(self._active)
            self._active.append(inv)
            self._bound[threading.get_ident()] = inv
        outcome = Outcome(failed=[])
        try:
            self._prepare(module, live)
            event = self.lambda_event(messages)
            context = LambdaContext(aws_request_id=f"req-{inv.label}")
            try:
                response = module.handler(event, context)
                failed_ids = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            except ProcessDeath:
                failed_ids = {m.id for m in messages}
            except BatchProcessingError:
                failed_ids = {m.id for m in messages}
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # must not happen (a pyo3 panic is a BaseException)
                failed_ids = {m.id for m in messages}
                if not inv.dead:
                    outcome.raised = f"{type(exc).__name__}: {str(exc)[:200]}"
                    self.raised.append(f"{inv.label}: {outcome.raised}")
            if inv.dead:  # the process died: whatever it said, every record fails
                failed_ids = {m.id for m in messages}
                self._processes[id(module)]["cold"] = True
            outcome.failed = [m for m in messages if m.id in failed_ids]
        finally:
            with self._lock:
                self._active.remove(inv)
                self._bound.pop(threading.get_ident(), None)
        outcome.died = inv.dead
        outcome.calls = list(inv.calls)
        status = f"died ({inv.dead})" if inv.dead else f"failed {len(outcome.failed)}"
        self.log.append(
            f"{inv.label} [{', '.join(m.origin for m in messages)}]: {len(inv.calls)} calls, "
            f"{status}"
        )
        return outcome

    def settle(self, messages: list[Message], label: str) -> None:
        """Redeliver (as SQS would, after the visibility timeout) until each message succeeds
        or SQS gives up on it (MAX_RECEIVES receives: to the DLQ)."""
        pending = [m for m in messages if m.receives < MAX_RECEIVES]
        self.sqs_dead += [m for m in messages if m.receives >= MAX_RECEIVES]
        attempt = 1
        while pending:
            outcome = self.invoke(pending, Invocation(f"{label}.r{attempt}"))
            attempt += 1
            self.sqs_dead += [m for m in outcome.failed if m.receives >= MAX_RECEIVES]
            pending = [m for m in outcome.failed if m.receives < MAX_RECEIVES]

    def deliver(
        self, messages: list[Message], label: str, inv: Invocation | None = None
    ) -> Outcome:
        outcome = self.invoke(messages, inv or Invocation(label))
        self.settle(outcome.failed, label)
        return outcome

    def run_paused(
        self, a_messages: list[Message], a_inv: Invocation, b_work: Callable[[], Any]
    ) -> tuple[Outcome, bool]:
        """Invocation A (process 2, in a thread) paused at its pause call while `b_work` runs
        in this thread; then A is released. Returns A's outcome and whether the pause was
        reached (if not, A ran to its end first and b_work after it)."""
        assert self.twin is not None
        result: dict[str, Outcome] = {}
        error: list[BaseException] = []

        def run_a() -> None:
            try:
                result["a"] = self.invoke(a_messages, a_inv, self.twin)
            except BaseException as exc:
                error.append(exc)

        thread = threading.Thread(target=run_a, name=f"invocation-{a_inv.label}", daemon=True)
        thread.start()
        while not a_inv.paused.wait(0.005):
            if not thread.is_alive():
                break
        reached = a_inv.paused.is_set()
        try:
            b_work()
        finally:
            a_inv.release.set()
            thread.join(PAUSE_TIMEOUT)
        if error:
            raise error[0]
        if "a" not in result:
            raise RuntimeError(f"{a_inv.label} did not finish")
        return result["a"], reached

    # -- replays -----------------------------------------------------------------------------

    def replay(self, archive: str) -> Upload:
        """`ingestctl replay`: the archived file staged again, and its notification."""
        data = self.s3.get_object(Bucket=BUCKET, Key=archive)["Body"].read()
        written = _replay(BucketStore(BUCKET, cast(Any, self.s3)), self.table, archive)
        put = {"VersionId": written.version_id, "ETag": written.etag}
        key = written.key  # staging/<t>.json, or baseline/<t>.json for a baseline's archive
        area = "baseline" if key == baseline_key(self.table) else "staging"
        upload = self.notify(-1, area, key, data, None, put)
        self.uploads.remove(upload)  # a replay adds no observation of its own
        return upload

    # -- reading the bucket ------------------------------------------------------------------

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, key: str) -> bytes:
        return cast(bytes, self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def versions(self, prefix: str) -> list[tuple[str, ...]]:
        """Every version (key, version id, ETag) and delete marker (key, version id, 'DEL')."""
        found: list[tuple[str, ...]] = []
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=prefix)
        for page in pages:
            found += [(v["Key"], v["VersionId"], v["ETag"]) for v in page.get("Versions", [])]
            found += [(d["Key"], d["VersionId"], "DEL") for d in page.get("DeleteMarkers", [])]
        return sorted(found)

    def snapshot(self) -> list[tuple[str, ...]]:
        return self.versions("latest/") + self.versions("history/")

    def latest_texts(self) -> list[str]:
        spec = TABLES[self.table]
        store = BucketStore(BUCKET, cast(Any, self.s3))
        return [row_json(spec, r) for r in read_latest(store, spec).rows]

    def history_texts(self) -> list[str]:
        spec = TABLES[self.table]
        store = BucketStore(BUCKET, cast(Any, self.s3))
        return [row_json(spec, h.row) for _, rows in iter_history(store, spec) for h in rows]

    def drain_dlq(self) -> list[str]:
        while True:
            got = self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10)
            messages = got.get("Messages", [])
            if not messages:
                return self.dlq_bodies
            for m in messages:
                self.dlq_bodies.append(m["Body"])
                self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=m["ReceiptHandle"])

    def dead_letters(self) -> list[str]:
        """Bodies in the DLQ: sent by the merge, or moved there by SQS."""
        return self.drain_dlq() + [m.body for m in self.sqs_dead]

    # -- the promise -------------------------------------------------------------------------

    def expected(self) -> tuple[set[str], dict[int, str]]:
        """Every version staged (by text), and per key the version of the latest observation
        (none: the latest observation of the key is a delete)."""
        spec = TABLES[self.table]
        versions: set[str] = set()
        events: dict[int, list[tuple[Observation, int, int, str | None]]] = {}
        for number, upload in enumerate(self.uploads):
            if upload.rows is None:
                continue
            per_key: dict[int, list[RowModel]] = {}
            for row in upload.rows:
                versions.add(row_json(spec, row))
                per_key.setdefault(getattr(row, spec.primary_key), []).append(row)
            for key, rows in per_key.items():
                final = sorted(rows, key=lambda r: r.last_updated)[-1]  # stable: file order
                events.setdefault(key, []).append(
                    (upload.observation, number, 0, row_json(spec, final))
                )
            for position, change in enumerate(upload.changes or []):
                key, text = _log_event(change)
                if text is not None:
                    versions.add(text)
                events.setdefault(key, []).append(
                    (_log_observation(change), number, position, text)
                )
        latest: dict[int, str] = {}
        for key, found in events.items():
            # changes of one transaction share their observation: file order, and the same
            # change staged twice (a re-peek) sorts next to itself
            last = sorted(found, key=lambda e: (e[0], e[2], e[1]))[-1][3]
            if last is not None:
                latest[key] = last
        return versions, latest

    def check(self) -> list[Violation]:
        """Contracts 1, 2, 3 and 5 on the bucket as it is now."""
        out: list[Violation] = []
        spec = TABLES[self.table]
        t = self.table
        versions, want = self.expected()
        try:
            latest = self.latest_texts()
            history = self.history_texts()
        except Exception as exc:
            return [Violation("1", f"latest/history unreadable: {type(exc).__name__}: {exc}")]
        found = Counter(latest) + Counter(history)
        in_latest, in_history = Counter(latest), Counter(history)
        for text in sorted(versions):
            if found[text] == 0:
                out.append(Violation("1", f"lost: {short(t, text)}"))
            elif found[text] > 1:
                out.append(
                    Violation(
                        "1",
                        f"duplicated: {short(t, text)} (latest x{in_latest[text]}, "
                        f"history x{in_history[text]})",
                    )
                )
        for text in sorted(set(found) - versions):
            out.append(Violation("1", f"a version no merged file holds: {short(t, text)}"))
        by_key = {json.loads(text)[spec.primary_key]: text for text in latest}
        for key in sorted(set(want) | set(by_key)):
            if by_key.get(key) != want.get(key):
                have = short(t, by_key[key]) if key in by_key else "nothing"
                expect = short(t, want[key]) if key in want else "no row"
                out.append(Violation("2", f"latest k{key} holds {have}, expected {expect}"))
        bad_versions = {u.version_id for u in self.uploads if u.rows is None}
        for key in (staging_key(t), baseline_key(t)):
            for v in self.versions(key):
                if v[0] != key or v[1] in bad_versions:
                    continue
                what = "a delete marker" if v[2] == "DEL" else f"version {v[1][:8]}"
                out.append(Violation("3", f"{key}: {what} left"))
        out += self._check_quarantine()
        out += [Violation("5", f"handler() raised: {r}") for r in self.raised]
        store = BucketStore(BUCKET, self.s3)
        out += [Violation("6", problem) for problem in index_problems(store, spec)]
        stuck = [m for m in self.sqs_dead if not self._is_bad(m.body)]
        for m in stuck:
            out.append(Violation("run", f"{m.origin} failed {m.receives} times: dead-lettered"))
        return out

    def _is_bad(self, body: str) -> bool:
        version = _version_of(body)
        return any(u.rows is None and u.version_id == version for u in self.uploads)

    def _check_quarantine(self) -> list[Violation]:
        out: list[Violation] = []
        bad = [u for u in self.uploads if u.rows is None]
        if not bad:
            return out
        keys = self.keys(f"quarantine/{self.table}/")
        copies = [k for k in keys if not k.endswith(".report.json")]
        reports = [k for k in keys if k.endswith(".report.json")]
        contents = {self.get(k) for k in copies}
        dead = {_version_of(b) for b in self.dead_letters()}
        for u in bad:
            if u.data not in contents:
                out.append(Violation("5", f"f{u.index}: no byte-identical copy under quarantine/"))
            if not reports:
                out.append(Violation("5", f"f{u.index}: no .report.json under quarantine/"))
            if u.version_id not in dead:
                out.append(Violation("5", f"f{u.index}: its message is not in the DLQ"))
        return out

    def archives(self, staging_only: bool = False) -> list[str]:
        """The archive objects, in the order of the uploads they hold (by their bytes)."""
        order = {u.data: (u.order, u.area) for u in self.uploads}
        found = []
        for key in self.keys(f"archive/{self.table}/"):
            place = order.get(self.get(key))
            if staging_only and place is not None and place[1] == "baseline":
                continue
            found.append((place[0] if place else ("~", 0), key))
        return [key for _, key in sorted(found)]

    def reprocess(self, replays: int | None = None, staging_only: bool = False) -> list[Violation]:
        """Contract 4: every message again, then replays of the archives (`replays`: how many,
        the oldest and the newest; None: all; `staging_only`: not a baseline's archive)."""
        out: list[Violation] = []
        before, ids = self.snapshot(), set(self.emitted)
        for number, m in enumerate(list(self.messages), start=1):
            self.deliver([self.message(m.body, f"{m.origin} again")], f"again{number}")
        after = self.snapshot()
        out += _changes("4a (every message again)", before, after)
        new = sorted(set(self.emitted) - ids)
        if new:
            out.append(Violation("4", f"4a emitted new event ids: {new[:4]}"))
        archives = self.archives(staging_only=staging_only)
        if replays is not None and len(archives) > replays:
            archives = [archives[0], archives[-1]][:replays] if replays <= 2 else archives
        for number, archive in enumerate(archives, start=1):
            before, ids = self.snapshot(), set(self.emitted)
            try:
                upload = self.replay(archive)
            except Exception as exc:
                out.append(Violation("4", f"replay of {archive} failed: {exc}"))
                continue
            self.deliver([self.message(upload.body, f"replay {archive}")], f"replay{number}")
            out += _changes(f"4b (replay of {archive.rsplit('/', 1)[-1]})", before, self.snapshot())
            new = sorted(set(self.emitted) - ids)
            if new:
                out.append(Violation("4", f"4b replay of {archive} emitted new ids {new[:4]}"))
        return out


class _Capture(logging.Handler):
    """The merge's error log lines (with the exception) into the world's log."""

    def __init__(self, world: World) -> None:
        super().__init__(logging.ERROR)
        self.world = world

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" ({type(exc).__name__}: {str(exc)[:160]})"
            inv = self.world._current()
            self.world.log.append(f"  {inv.label if inv else '-'} error: {text}")


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _version_of(body: str) -> str | None:
    try:
        return cast(str, json.loads(body)["Records"][0]["s3"]["object"].get("versionId"))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _changes(
    what: str, before: list[tuple[str, ...]], after: list[tuple[str, ...]]
) -> list[Violation]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    if not added and not removed:
        return []
    parts = [f"+{k} ({v[:6]})" for k, v, _ in added[:4]] + [
        f"-{k} ({v[:6]})" for k, v, _ in removed[:4]
    ]
    return [Violation("4", f"{what} changed latest/history: " + ", ".join(parts))]


_twin_count = 0


class _Router:
    """Sends the default session's hook calls to the world being run (one at a time)."""

    world: World | None = None

    def before_call(self, **kwargs: Any) -> Any:
        return self.world._before_call(**kwargs) if self.world else None

    def after_call(self, **kwargs: Any) -> Any:
        return self.world._after_call(**kwargs) if self.world else None

    def after_call_error(self, **kwargs: Any) -> Any:
        return self.world._after_call_error(**kwargs) if self.world else None

    def before_send(self, **kwargs: Any) -> Any:
        return self.world._before_send(**kwargs) if self.world else None


_ROUTER = _Router()
_SESSIONS: list[Any] = []


def _sessions() -> tuple[Any, Any]:
    """The harness's own session and the handler's (hooked) one, made once per process: a
    new botocore session loads every service model again (most of a case's time)."""
    if not _SESSIONS:
        own = boto3.session.Session(region_name=REGION)
        hooked = boto3.session.Session(region_name=REGION)
        events = hooked.events
        events.register("before-call", _ROUTER.before_call)
        events.register("after-call", _ROUTER.after_call)
        events.register("after-call-error", _ROUTER.after_call_error)
        events.register_first("before-send", _ROUTER.before_send)
        _SESSIONS.extend([own, hooked])
    return _SESSIONS[0], _SESSIONS[1]


@contextlib.contextmanager
def _small_index() -> Iterator[None]:
    """Checkpoints of the history index every 2 entries, leaves of 3 rows, a unit folded once
    every 2 checkpoints: every plan writes and reads them, and rows pending in deltas."""
    saved = history_index.INDEX_EVERY, history_index.LEAF_ROWS, history_index.FOLD_EVERY
    history_index.INDEX_EVERY, history_index.LEAF_ROWS, history_index.FOLD_EVERY = 2, 3, 2
    try:
        yield
    finally:
        history_index.INDEX_EVERY, history_index.LEAF_ROWS, history_index.FOLD_EVERY = saved


def _load_twin_handler() -> ModuleType:
    """A second copy of the handler module: a second Lambda process (its own service and
    batch processor), for invocations that run at the same time as another."""
    global _twin_count
    _twin_count += 1
    path = merge_handler.__file__
    assert path is not None
    spec = importlib.util.spec_from_file_location(f"_merge_handler_process_{_twin_count}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _partitions(table: str, rows_per_partition: int | None) -> Iterator[None]:
    table_partitions = _optional("tests.integration.merge_pipeline", "table_partitions")
    if table_partitions is not None:
        with table_partitions(table, rows_per_partition):
            yield
        return
    registry = cast(dict[str, Any], TABLES)  # pragma: no cover
    spec = registry[table]
    registry[table] = replace(spec, rows_per_partition=rows_per_partition)
    try:
        yield
    finally:
        registry[table] = spec


@contextlib.contextmanager
def _atomic_conditional_puts() -> Iterator[None]:
    """S3 decides If-Match / If-None-Match atomically; moto checks then writes. Serialise
    PutObject (ops/local/moto_edge.py when it is there, else the same small patch)."""
    aws_like_moto = _optional("ops.local.moto_edge", "aws_like_moto")
    if aws_like_moto is not None:
        with aws_like_moto():
            yield
        return
    from moto.s3.responses import S3Response  # pragma: no cover

    original = S3Response.put_object
    lock = threading.Lock()

    def put_object(self: Any) -> Any:
        with lock:
            return original(self)

    setattr(S3Response, "put_object", put_object)  # noqa: B010
    try:
        yield
    finally:
        setattr(S3Response, "put_object", original)  # noqa: B010


def _replay(store: BucketStore, table: str, archive: str) -> Any:
    """`ops.dismissal.replay`; if that module cannot be imported (mid-rewrite), what it does:
    the archived bytes staged again, naming the archive as the on-bucket contract says."""
    replay = _optional("ops.dismissal", "replay")
    if replay is not None:
        return replay(store, table, archive)
    metadata: dict[str, str] = {}
    replay_of = _optional("shared.commitlog", "REPLAY_OF_METADATA")
    if replay_of:
        metadata[replay_of] = archive
    found = store.get(archive)
    came_from = found.metadata.get(_optional("shared.commitlog", "AREA_METADATA") or "-")
    key = baseline_key(table) if came_from == "baseline" else staging_key(table)
    return store.put(key, found.data, metadata=metadata)


def replay_is_fallback() -> bool:
    return _optional("ops.dismissal", "replay") is None


# ---- running one case ----------------------------------------------------------------------


@dataclass
class CaseResult:
    plan: Plan
    fault: Fault
    violations: list[Violation]
    calls: list[list[str]]  # the plan invocations' first attempts
    reached: bool = True
    log: list[str] = field(default_factory=list)
    seed: int = 1

    @property
    def repro(self) -> str:
        plan = self.plan.name
        seed = "" if plan.startswith("generated-") else f" --seed {self.seed}"
        return (
            "python -m tests.integration.merge_interleavings case "
            f"--plan {plan}{seed} --fault {self.fault.label} -v"
        )

    def report(self, verbose: bool = False) -> str:
        lines = [f"{self.plan.name} / {self.fault.label}: {len(self.violations)} violation(s)"]
        lines += [f"    {v}" for v in self.violations[:8]]
        if len(self.violations) > 8:
            lines.append(f"    ... {len(self.violations) - 8} more")
        lines.append(f"    repro: {self.repro}")
        if verbose:
            lines.append(self.plan.describe())
            lines += [f"    | {entry}" for entry in self.log]
        return "\n".join(lines)


class CaseRunner:
    def __init__(self, world: World, plan: Plan, fault: Fault) -> None:
        self.w = world
        self.plan = plan
        self.fault = fault
        self.uploads: dict[int, Upload] = {}
        self.calls: list[list[str]] = []
        self.deferred: list[tuple[list[Message], str]] = []
        self.reached = fault.kind == "none"

    def run(self) -> None:
        steps = list(self.plan.steps)
        number = 0
        position = 0
        while position < len(steps):
            step = steps[position]
            position += 1
            if step.kind == "put":
                self._put(step)
                continue
            number += 1
            label = f"i{number}"
            messages = [self.w.first_message(self.uploads[i]) for i in step.files]
            if self.fault.target != number:
                outcome = self.w.deliver(messages, label)
                self.calls.append(outcome.calls)
                continue
            # the faulted invocation; "next" may consume the steps up to the next delivery
            following = steps[position:]
            used = self._faulted(label, messages, following, number)
            position += used
            number += sum(1 for s in following[:used] if s.kind == "deliver")
        for messages, label in self.deferred:
            self.w.settle(messages, label)

    def _put(self, step: Step) -> None:
        i = step.files[0]
        self.uploads[i] = self.w.put(i, self.plan.files[i])

    def _faulted(
        self, label: str, messages: list[Message], following: list[Step], number: int
    ) -> int:
        f, w = self.fault, self.w
        if f.kind in ("crash", "switch"):
            inv = Invocation(label, crash_at=f.call, crash_after=f.after)
            outcome = w.invoke(messages, inv)
            self.calls.append(outcome.calls)
            self.reached = inv.dead is not None
            if f.kind == "switch":
                w.switch_partitions(2)
            self._after(outcome.failed, label, "end" if f.kind == "switch" else f.redeliver)
            return 0
        if f.kind == "slowdown":
            slow = SlowDown(start=f.call, count=f.burst)
            outcome = w.invoke(messages, Invocation(label, slow=slow))
            self.calls.append(outcome.calls)
            self.reached = slow.answered > 0
            self._after(outcome.failed, label, f.redeliver)
            return 0
        if f.kind == "lost":
            inv = Invocation(label, lost_at=f.call)
            outcome = w.invoke(messages, inv)
            self.calls.append(outcome.calls)
            self.reached = inv.lost_done
            self._after(outcome.failed, label, f.redeliver)
            return 0
        if f.kind == "pause":
            return self._pause(label, messages, following, number)
        if f.kind == "crash-pause":
            return self._crash_pause(label, messages)
        outcome = w.deliver(messages, label)
        self.calls.append(outcome.calls)
        return 0

    def _after(self, failed: list[Message], label: str, when: str) -> None:
        if when == "end":
            self.deferred.append((failed, f"{label}.late"))
        else:
            self.w.settle(failed, label)

    def _other(self, label: str, messages: list[Message]) -> Message:
        if self.fault.other == "redrive":
            return self.w.message(
                messages[0].body,
                f"{messages[0].origin} redrive",
                DeadLetterQueueSourceArn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{merge_dlq_name(self.w.table)}",
            )
        return self.w.message(messages[0].body, f"{messages[0].origin} dup")

    def _pause(
        self, label: str, messages: list[Message], following: list[Step], number: int
    ) -> int:
        f, w = self.fault, self.w
        a = Invocation(label, pause_at=f.call, pause_after=f.after)
        used = 0
        b_outcomes: list[tuple[list[Message], str]] = []
        if f.other == "next":
            deliver_at = next((i for i, s in enumerate(following) if s.kind == "deliver"), None)
            if deliver_at is None:
                work_steps: list[Step] = []
            else:
                work_steps = following[: deliver_at + 1]
                used = deliver_at + 1

            def b_work() -> None:
                for s in work_steps:
                    if s.kind == "put":
                        self._put(s)
                    else:
                        b_messages = [w.first_message(self.uploads[i]) for i in s.files]
                        b_label = f"i{number + 1}"
                        out = w.invoke(b_messages, Invocation(b_label))
                        b_outcomes.append((out.failed, b_label))
        else:
            copy = self._other(label, messages)

            def b_work() -> None:
                out = w.invoke([copy], Invocation(f"{label}-{f.other}"))
                b_outcomes.append((out.failed, f"{label}-{f.other}"))

        outcome, self.reached = w.run_paused(messages, a, b_work)
        self.calls.append(outcome.calls)
        w.settle(outcome.failed, label)
        for failed, b_label in b_outcomes:
            w.settle(failed, b_label)
        return used

    def _crash_pause(self, label: str, messages: list[Message]) -> int:
        f, w = self.fault, self.w
        a = Invocation(label, crash_at=f.call, crash_after=f.after)
        first = w.invoke(messages, a)
        self.calls.append(first.calls)
        copy = self._other(label, messages)
        b = Invocation(f"{label}-{f.other}", crash_at=f.call2, crash_after=f.after2)
        second = w.invoke([copy], b)
        a_retry = Invocation(f"{label}.r1", pause_at=f.call3)
        b_failed: list[Message] = []

        def b_work() -> None:
            out = w.invoke(second.failed, Invocation(f"{label}-{f.other}.r1"))
            b_failed.extend(out.failed)

        if first.failed:
            outcome, paused = w.run_paused(first.failed, a_retry, b_work)
            w.settle(outcome.failed, f"{label}.r1")
        else:
            b_work()
            paused = False
        w.settle(b_failed, f"{label}-{f.other}.r1")
        self.reached = a.dead is not None and b.dead is not None and paused
        return 0


def run_case(
    plan: Plan,
    fault: Fault,
    *,
    replays: int | None = 2,
    staging_only: bool = True,
    seed: int = 1,
    reprocess: bool = True,
) -> CaseResult:
    """One plan with one fault, to quiescence; then the checks and the reprocessing (every
    message again; `replays` archives replayed, None: all; `staging_only`: not a baseline's)."""
    violations: list[Violation] = []
    with World(plan.table, plan.partitions, seed=f"{plan.name}:{fault.label}") as world:
        runner = CaseRunner(world, plan, fault)
        try:
            runner.run()
            violations += world.check()
            if reprocess:
                violations += world.reprocess(replays, staging_only)
                violations += [v for v in world.check() if v.contract in ("3", "run")]
        except Exception as exc:
            violations.append(Violation("run", f"harness error {type(exc).__name__}: {exc}"))
        result = CaseResult(plan, fault, _dedup(violations), runner.calls, runner.reached)
        result.log = world.log
        result.seed = seed
    return result


def _dedup(violations: list[Violation]) -> list[Violation]:
    seen: set[str] = set()
    out = []
    for v in violations:
        if str(v) not in seen:
            seen.add(str(v))
            out.append(v)
    return out


# ---- the fault sets ------------------------------------------------------------------------


def faults_for(plan: Plan, calls: list[list[str]], mode: str, rng: random.Random) -> list[Fault]:
    """Every fault of `mode` ("quick" or "full") for a plan whose clean run made `calls`."""
    faults: list[Fault] = []
    full = mode == "full"
    for i, made in enumerate(calls, start=1):
        n = len(made)
        # After call n the bucket is as it is before call n+1 (the run up to the fault is
        # the clean run's): quick crashes before every call and after the last; full does
        # both everywhere (a check of that), redelivering at once and after the plan.
        for call in range(1, n + 1):
            for after in (False, True):
                if after and call < n and not full:
                    continue
                faults.append(Fault("crash", i, call, after))
                if full:
                    faults.append(Fault("crash", i, call, after, redeliver="end"))
        others = ["dup", "next"] + (["redrive"] if full else [])
        if i == len(calls):
            others.remove("next")
        for other in others:
            for call in range(1, n + 1):
                faults.append(Fault("pause", i, call, False, other=other))
            faults.append(Fault("pause", i, n, True, other=other))  # after the last call
        latest_requests = sum(1 for c in made if c.startswith("s3.") and " latest/" in c)
        if latest_requests:
            starts = range(1, latest_requests + 1) if full else [1]
            for start in starts:
                for burst in (1, 2, 3, 8) if full else (2, 3):
                    faults.append(Fault("slowdown", i, start, burst=burst))
        if full:  # a write carried out whose response is lost (500; botocore retries it)
            for call, text in enumerate(made, start=1):
                if text.startswith(("s3.Put", "s3.Delete", "s3.Copy")):
                    faults.append(Fault("lost", i, call))
        samples = 12 if full else 2
        for _ in range(samples if n else 0):
            faults.append(
                Fault(
                    "crash-pause",
                    i,
                    rng.randint(1, n),
                    rng.random() < 0.5,
                    other="dup",
                    call2=rng.randint(1, n),
                    after2=rng.random() < 0.5,
                    call3=rng.randint(1, n),
                )
            )
    if plan.partitions is None and len(calls) >= 2:  # the layout switch after batch 2's commit
        target = 2
        for call in range(1, len(calls[target - 1]) + 1):
            faults.append(Fault("switch", target, call, True))
    return faults


@dataclass
class Summary:
    cases: int = 0
    skipped: int = 0  # the fault's call was not reached (e.g. the run made fewer calls)
    failed: list[CaseResult] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    failed_by_kind: Counter[str] = field(default_factory=Counter)
    contracts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, result: CaseResult) -> None:
        kind = result.fault.kind
        if not result.reached and kind != "none":
            self.skipped += 1
        self.cases += 1
        self.by_kind[kind] += 1
        if result.violations:
            self.failed.append(result)
            self.failed_by_kind[kind] += 1
            for c in {v.contract for v in result.violations}:
                self.contracts[c] += 1

    def signatures(self) -> dict[str, list[CaseResult]]:
        """Distinct violations (ids, stamps and versions masked) and the cases showing each."""
        found: dict[str, list[CaseResult]] = {}
        for r in self.failed:
            for sig in dict.fromkeys(signature(v) for v in r.violations):
                found.setdefault(sig, []).append(r)
        return found

    def text(self, limit: int = 20, verbose: bool = False) -> str:
        lines = [
            f"{self.cases} cases ({self.skipped} more whose fault point was not reached, not "
            f"counted) in {self.seconds:.1f}s; {len(self.failed)} with violations",
            "  cases with violations / cases, by fault: "
            + ", ".join(
                f"{k} {self.failed_by_kind[k]}/{n}" for k, n in sorted(self.by_kind.items())
            ),
        ]
        if self.contracts:
            lines.append(
                "  contracts broken (cases): "
                + ", ".join(f"{c}: {n}" for c, n in sorted(self.contracts.items()))
            )
        if replay_is_fallback():
            lines.append("  note: ops.dismissal does not import; replays used the fallback")
        for number, (sig, cases) in enumerate(self.signatures().items()):
            if number >= limit:
                lines.append(f"  ... {len(self.signatures()) - limit} more distinct violations")
                break
            kinds = Counter(c.fault.kind for c in cases)
            lines.append(
                f"- {sig}\n    in {len(cases)} case(s) ("
                + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
                + f"); first: {cases[0].plan.name} / {cases[0].fault.label}"
                + f"\n    repro: {cases[0].repro}"
            )
        if verbose:
            lines += [r.report(True) for r in self.failed[:limit]]
        return "\n".join(lines)


_MASKS = [
    (re.compile(r"\d{8}T\d{6}\d*Z"), "<stamp>"),
    (re.compile(r"(?<![0-9a-f])[0-9a-f]{16}(?![0-9a-f])"), "<batch>"),
    (re.compile(r"(?<![0-9a-f])[0-9a-f]{8,}(?![0-9a-f])"), "<hex>"),
    (re.compile(r"\b\d{12}\b"), "<n>"),
    (re.compile(r"\(([0-9A-Za-z._-]{6})\)"), "(<v>)"),
    (re.compile(r"version [0-9A-Za-z._-]{8}"), "version <v>"),
    (re.compile(r"k\d+v\d+@\d\d:\d\d"), "<row>"),
    (re.compile(r"k\d+:k\d+v\d+@\d\d:\d\d"), "<row>"),
    (re.compile(r"\bk\d+\b"), "k<n>"),
    (re.compile(r"\bf\d+\b"), "f<n>"),
    (re.compile(r"\bi\d+(\.r\d+|-\w+)*"), "i<n>"),
    (re.compile(r"call \d+"), "call <n>"),
]


def signature(v: Violation) -> str:
    text = str(v)
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text


def run_plan(
    plan: Plan,
    mode: str = "quick",
    *,
    select: Callable[[Fault], bool] | None = None,
    seed: int = 1,
    summary: Summary | None = None,
    progress: bool = False,
) -> Summary:
    """The clean run of `plan`, then every fault of `mode` (those `select` keeps). Quick:
    a replay of the oldest staging archive; full: of every archive."""
    summary = summary or Summary()
    started = time.monotonic()
    checks: dict[str, Any] = (
        {"replays": 1, "staging_only": True}
        if mode == "quick"
        else {"replays": None, "staging_only": False}
    )
    clean = run_case(plan, Fault(), seed=seed, **checks)
    summary.add(clean)
    rng = random.Random(f"faults:{plan.name}:{seed}")
    faults = [f for f in faults_for(plan, clean.calls, mode, rng) if select is None or select(f)]
    for number, fault in enumerate(faults, start=1):
        if progress and number % 50 == 0:
            print(f"  {plan.name}: {number}/{len(faults)}", file=sys.stderr, flush=True)
        result = run_case(plan, fault, seed=seed, **checks)
        if not result.reached and fault.kind != "none":
            summary.skipped += 1
            continue
        summary.add(result)
    summary.seconds += time.monotonic() - started
    return summary


def _kind(kind: str, *targets: int, other: str = "") -> Callable[[Fault], bool]:
    def select(f: Fault) -> bool:
        return (
            f.kind == kind
            and (not targets or f.target in targets)
            and (not other or f.other == other)
        )

    return select


def _either(*selects: Callable[[Fault], bool]) -> Callable[[Fault], bool]:
    return lambda f: any(s(f) for s in selects)


# The quick set (the pytest form): per part, a plan and the faults it keeps. The targets are
# the most exposed invocations: basic i3 merges the overwritten version after a later file
# committed, i2 is that later file (paused while i3 commits); observation i2 is one batch of
# two files in reverse observation order, i1 the baseline (paused while i2 merges: a late
# baseline); switch i2 is the batch committed before the layout switch.
QUICK: dict[str, tuple[str, Callable[[Fault], bool]]] = {
    "basic-crash": ("basic", _kind("crash", 3)),
    "basic-pause": (
        "basic",
        _either(_kind("pause", 3, other="dup"), _kind("pause", 2, other="next")),
    ),
    "basic-crash-pause-slowdown": ("basic", _either(_kind("crash-pause", 3), _kind("slowdown"))),
    "observation-crash": ("observation", _kind("crash")),
    "observation-pause": (
        "observation",
        _either(_kind("pause", 2), _kind("pause", 1, other="next"), _kind("slowdown")),
    ),
    "switch": ("switch", _kind("switch")),
    "bad-crash": ("bad", _kind("crash", 2)),
    # log mode: i2 is the later file delivered first, i3 the earlier one with deletes and a
    # delete + re-insert in one transaction (late against i2's rows); i5 the re-peeked copy
    "log-crash": ("log", _kind("crash", 3)),
    "log-pause": ("log", _either(_kind("pause", 3, other="dup"), _kind("pause", 2, other="next"))),
    "log-generated": ("log-1-0", _either(_kind("crash", 2), _kind("pause", 2, other="dup"))),
}


def run_quick(seed: int = 1, parts: list[str] | None = None, progress: bool = False) -> Summary:
    summary = Summary()
    for part in parts or list(QUICK):
        name, select = QUICK[part]
        plan = plan_named(name, seed)
        run_plan(plan, "quick", select=select, seed=seed, summary=summary, progress=progress)
    return summary


def run_full(
    seed: int = 1, generated: int = 6, *, progress: bool = True, verbose: bool = False
) -> Summary:
    """The named plans and `generated` random ones (from `seed`), each with every fault of the
    full set, every check after each case; prints a summary and returns it."""
    summary = Summary()
    plans = [plan_named(name, seed) for name in PLANS] + [
        plan_generated(seed, n) for n in range(generated)
    ]
    plans += [plan_log_generated(seed, n) for n in range(max(1, generated // 2))]
    for plan in plans:
        if progress:
            print(f"plan {plan.name}", file=sys.stderr, flush=True)
        run_plan(plan, "full", seed=seed, summary=summary, progress=progress)
    print(summary.text(limit=40, verbose=verbose))
    return summary


# ---- f: valid JSON that must be quarantined -------------------------------------------------

BAD_INPUTS = {
    # a lone surrogate: valid JSON, not a Unicode string (it cannot be written as UTF-8)
    "surrogate": ("staff", "first_name", '"\\ud800"'),
    # an integer of 5000 digits (Python refuses to convert more than 4300 by default)
    "bigint": ("staff", "department_id", "9" * 5000),
    # money of a billion digits once written out in plain notation
    "money": ("payment", "payment_amount", "1E+999999999"),
}


def payment(key: int, minutes: float, amount: str) -> RowModel:
    from decimal import Decimal

    from shared.schemas import Payment

    return Payment(
        payment_id=key,
        transaction_id=key,
        counterparty_id=3,
        payment_amount=Decimal(amount),
        currency_id=1,
        payment_type_id=1,
        paid=False,
        payment_date="2024-11-20",
        company_ac_number=67305075,
        counterparty_ac_number=31622269,
        created_at=T0 - timedelta(days=1),
        last_updated=T0 + timedelta(minutes=minutes),
    )


def bad_input_case(kind: str) -> list[str]:
    """A baseline, then one SQS batch of [a file with a bad value (`kind`) next to a valid
    fresh row, a valid update]: the bad file is quarantined (copy + report), its record fails
    or goes to the DLQ, the other merges, and handler() does not raise. The violations."""
    table, column, literal = BAD_INPUTS[kind]
    spec = TABLES[table]
    base: list[RowModel]
    if table == "staff":
        base = [staff(1, 0, "k1v1"), staff(2, 0, "k2v2")]
        fresh: RowModel = staff(3, 5, "k3fresh")
        update: RowModel = staff(1, 20, "k1v3")
    else:
        base = [payment(1, 0, "10.5"), payment(2, 0, "20")]
        fresh, update = payment(3, 5, "30.25"), payment(1, 20, "11")
    raw = [json.loads(row_json(spec, r)) for r in (fresh, update)]
    raw[1][column] = "@@BAD@@"
    data = json.dumps(raw).replace('"@@BAD@@"', literal).encode()
    out: list[str] = []
    with World(table, seed=f"bad-input:{kind}") as w:
        first = w.put(0, FileSpec("baseline", dump_rows(spec, base), list(base)))
        w.deliver([w.first_message(first)], "i1")
        bad = w.put(1, FileSpec("staging", data, None, f"bad {column}"))
        good = w.put(2, FileSpec("staging", dump_rows(spec, [update]), [update]))
        messages = [w.first_message(bad), w.first_message(good)]
        outcome = w.invoke(messages, Invocation("i2"))
        if outcome.raised:
            out.append(f"handler() raised {outcome.raised}")
        for m in outcome.failed:
            if m.body == bad.body:  # failed: SQS redelivers it, then moves it to the DLQ
                w.sqs_dead.append(m)
            else:
                w.settle([m], "i2")
        out += [str(v) for v in w.check()]
        if out:
            out += [line for line in w.log if "error:" in line][:3]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.merge_interleavings")
    parser.add_argument("what", choices=["quick", "full", "case", "plans", "badinput"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--generated", type=int, default=6)
    parser.add_argument("--plan", default="basic")
    parser.add_argument("--fault", default="none")
    parser.add_argument("--part", action="append", help="quick: only these parts")
    parser.add_argument("--kind", default="surrogate", help="badinput: " + ", ".join(BAD_INPUTS))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "plans":
        for name in PLANS:
            print(plan_named(name, args.seed).describe())
        for n in range(args.generated):
            print(plan_generated(args.seed, n).describe())
        return 0
    if args.what == "case":
        plan = plan_named(args.plan, args.seed)
        result = run_case(plan, Fault.parse(args.fault), replays=None, staging_only=False)
        print(result.report(verbose=args.verbose))
        return 1 if result.violations else 0
    if args.what == "badinput":
        found = bad_input_case(args.kind)
        print("RESULT " + json.dumps(found))
        return 1 if found else 0
    if args.what == "quick":
        summary = run_quick(args.seed, args.part, progress=True)
        print(summary.text(verbose=args.verbose))
    else:
        summary = run_full(args.seed, args.generated, verbose=args.verbose)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
