"""The commit protocol on the in-memory fake: crashes at every call, interleavings, ABA.

docs/merge_protocol.md states what must hold; each test drives `MergeService.process` with
the notifications AWS would send and checks it through the bucket, never through internals.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import pytest

from services.merge.service import MergeService
from services.merge.settings import MergeSettings
from services.merge.source import ObjectRef
from shared.commitlog import REPLAY_OF_METADATA, log_prefix
from shared.reader import iter_history, read_latest
from shared.rows import dump_rows, load_rows, row_json
from shared.tables import TABLES
from tests.fakes import ListSink, MemoryStore
from tests.integration.merge_pipeline import table_partitions
from tests.rows import staff

SPEC = TABLES["staff"]


class Crash(RuntimeError):
    pass


class Bucket:
    """A fake bucket, the notifications of its uploads, and merge services on it."""

    def __init__(self) -> None:
        self.store = MemoryStore(bucket="b")
        self.sink = ListSink()
        self.uploads = 0

    def service(self) -> MergeService:
        settings = MergeSettings(
            bucket_name="b", table_name="staff", event_bus_name="e", dlq_url="q"
        )
        return MergeService(settings, self.store, self.sink, self.sink)

    def upload(self, rows, area="staging", metadata=None) -> ObjectRef:
        key = f"{area}/staff.json"
        written = self.store.put(key, dump_rows(SPEC, rows), metadata=metadata)
        self.uploads += 1
        at = datetime(2026, 12, 1, 12, 0, 0) + timedelta(seconds=self.uploads)
        return ObjectRef(
            bucket="b",
            key=key,
            version_id=written.version_id,
            message_body=f"notification {self.uploads}",
            event_time=at.isoformat(timespec="milliseconds") + "Z",
            sequencer=f"{self.uploads:018X}",
        )

    def latest(self):
        return sorted(row_json(SPEC, r) for r in read_latest(self.store, SPEC).rows)

    def history(self):
        return [row_json(SPEC, h.row) for _, rows in iter_history(self.store, SPEC) for h in rows]

    def snapshot(self):
        return {
            key: [v.version_id for v in versions]
            for key, versions in self.store.objects.items()
            if key.startswith(("latest/", "history/", "archive/", "_state/log/"))
        }


def crash_at(store: MemoryStore, number: int, after: bool = False):
    """Fail the `number`-th call from now (before it is made)."""
    start = len(store.calls)

    def hook(operation, key):
        if len(store.calls) - start == number:
            store.hook = None
            raise Crash(f"call {number}: {operation} {key}")

    store.hook = hook


def run_to_completion(bucket: Bucket, refs, attempts=20):
    for ref in refs:
        for _ in range(attempts):
            try:
                bucket.service().process(ref)
                break
            except Crash:
                continue
        else:
            raise AssertionError(f"{ref} never finished")


def every_version_once(bucket: Bucket, files):
    every = {row_json(SPEC, r) for rows in files for r in rows}
    counts = Counter(bucket.latest() + bucket.history())
    assert set(counts) == every
    assert [t for t, n in counts.items() if n > 1] == []


FILES = [
    [staff(1, 0), staff(2, 0), staff(3, 0)],  # a baseline
    [staff(2, 10, name="B1"), staff(4, 10)],  # an update and an insert
    [staff(3, 5, name="late"), staff(3, 4, name="older dup")],  # in-file duplicates
    [staff(1, 0, name="silent edit")],  # same last_updated, other content
    [],  # an empty file
]


def test_a_crash_before_every_call_then_redelivery_loses_and_doubles_nothing():
    clean = Bucket()
    refs = [clean.upload(rows, "baseline" if i == 0 else "staging") for i, rows in enumerate(FILES)]
    before = len(clean.store.calls)
    run_to_completion(clean, refs)
    calls = len(clean.store.calls) - before
    expected_latest = clean.latest()
    for number in range(1, calls + 1):
        bucket = Bucket()
        refs = [bucket.upload(r, "baseline" if i == 0 else "staging") for i, r in enumerate(FILES)]
        crash_at(bucket.store, number)
        run_to_completion(bucket, refs)
        assert bucket.latest() == expected_latest, number
        every_version_once(bucket, FILES)
        assert not any(
            bucket.store.versions(k) for k in ("staging/staff.json", "baseline/staff.json")
        )
        state = bucket.snapshot()
        run_to_completion(bucket, refs)  # everything delivered again
        assert bucket.snapshot() == state, number


def test_a_later_observation_wins_whatever_the_delivery_order():
    bucket = Bucket()
    first = bucket.upload([staff(1, 0, name="First")])
    second = bucket.upload([staff(1, 0, name="Second")])  # a silent edit, observed later
    run_to_completion(bucket, [second, first])
    assert bucket.latest() == [row_json(SPEC, staff(1, 0, name="Second"))]
    assert bucket.history() == [row_json(SPEC, staff(1, 0, name="First"))]


def test_twins_of_one_batch_commit_it_once():
    bucket = Bucket()
    run_to_completion(bucket, [bucket.upload([staff(1, 0)])])
    ref = bucket.upload([staff(1, 10, name="Jo"), staff(1, 5, name="mid")])
    entered = threading.Event()
    release = threading.Event()

    def pause_at_commit(operation, key):
        if operation == "put" and key.startswith(log_prefix("staff")) and not entered.is_set():
            entered.set()
            release.wait(5)

    bucket.store.hook = pause_at_commit
    twin = threading.Thread(target=lambda: bucket.service().process(ref))
    twin.start()
    entered.wait(5)
    bucket.store.hook = None
    bucket.service().process(ref)  # the duplicate delivery runs to completion first
    release.set()
    twin.join(5)
    every_version_once(bucket, [[staff(1, 0)], [staff(1, 10, name="Jo"), staff(1, 5, name="mid")]])
    assert len(list(bucket.store.keys(log_prefix("staff")))) == 2
    ids = [e.event_id for e in bucket.sink.events]
    assert len(set(ids)) == 4  # the twin's events repeat the same ids


def test_a_stale_copy_of_latest_is_rolled_forward_after_an_aba():
    """A commits entry 2 (history only: a version observed before latest's) and stalls
    before copying it; B copies entry 2 itself, commits entry 3 (history only too) and copies
    it. latest's bytes never changed, so A's If-Match on what it read still passes and A's
    copy says entry 2: A must notice entry 3 and copy it, or latest stays behind the log."""
    bucket = Bucket()
    a_ref = bucket.upload([staff(1, 30, name="old A")])
    b_ref = bucket.upload([staff(1, 40, name="old B")])
    run_to_completion(bucket, [bucket.upload([staff(1, 0, name="X")])])  # observed last
    committed = threading.Event()
    release = threading.Event()

    def stall_after_commit(operation, key):
        if operation == "put" and key == "latest/staff.json" and not committed.is_set():
            committed.set()
            release.wait(5)

    bucket.store.hook = stall_after_commit
    a = threading.Thread(target=lambda: bucket.service().process(a_ref))
    a.start()
    committed.wait(5)
    bucket.store.hook = None
    bucket.service().process(b_ref)
    release.set()
    a.join(5)
    assert bucket.latest() == [row_json(SPEC, staff(1, 0, name="X"))]
    assert sorted(bucket.history()) == sorted(
        row_json(SPEC, staff(1, m, name=n)) for m, n in ((30, "old A"), (40, "old B"))
    )
    assert bucket.store.get("latest/staff.json").metadata["merge-seq"] == "3"


def test_two_merges_of_one_late_version_that_fail_before_committing_keep_it_once():
    bucket = Bucket()
    old = [staff(1, 5, name="old")]
    refs = [bucket.upload(old), bucket.upload(old)]  # the same version, observed twice
    run_to_completion(bucket, [bucket.upload([staff(1, 20, name="new")])])  # observed last

    def refuse_commits(operation, key):
        if operation == "put" and key.startswith(log_prefix("staff")):
            raise Crash("503")

    bucket.store.hook = refuse_commits
    for ref in refs:
        with pytest.raises(Crash):
            bucket.service().process(ref)
    bucket.store.hook = None
    run_to_completion(bucket, refs)
    assert bucket.history().count(row_json(SPEC, old[0])) == 1


def test_a_layout_switch_between_a_commit_and_its_redelivery():
    bucket = Bucket()
    run_to_completion(bucket, [bucket.upload([staff(k, 0) for k in range(1, 6)])])
    first = bucket.upload([staff(2, 10, name="B")])
    crash_at(bucket.store, 4)  # get source, get latest, put entry, put history: dies there
    with pytest.raises(Crash):
        bucket.service().process(first)
    with table_partitions("staff", 2):
        second = bucket.upload([staff(4, 10, name="D")])
        run_to_completion(bucket, [second, first])
        run_to_completion(bucket, [first, second])  # and once more: nothing changes
        rows = [
            [staff(k, 0) for k in range(1, 6)],
            [staff(2, 10, name="B")],
            [staff(4, 10, name="D")],
        ]
        every_version_once(bucket, rows)
        assert not bucket.store.exists("latest/staff.json")


def test_a_switch_to_partitions_that_dies_before_retiring_the_file_retires_it_on_redelivery():
    bucket = Bucket()
    run_to_completion(bucket, [bucket.upload([staff(k, 0) for k in range(1, 6)])])
    with table_partitions("staff", 2):
        ref = bucket.upload([staff(4, 10, name="D")])

        def die_at_retiring(operation, key):
            if operation == "delete" and key == "latest/staff.json":
                bucket.store.hook = None
                raise Crash("before the bare delete of the one-file latest")

        bucket.store.hook = die_at_retiring
        with pytest.raises(Crash):
            bucket.service().process(ref)
        assert bucket.store.exists("latest/staff.json")
        run_to_completion(bucket, [ref])
        assert not bucket.store.exists("latest/staff.json")
        state = bucket.snapshot()
        run_to_completion(bucket, [ref])
        assert bucket.snapshot() == state
        every_version_once(bucket, [[staff(k, 0) for k in range(1, 6)], [staff(4, 10, name="D")]])


def test_a_replay_that_is_the_first_merge_after_a_switch_to_partitions_changes_nothing():
    bucket = Bucket()
    run_to_completion(bucket, [bucket.upload([staff(k, 0) for k in range(1, 6)])])
    (archive,) = bucket.store.keys("archive/staff/")
    with table_partitions("staff", 2):
        state = bucket.snapshot()
        data = bucket.store.get(archive).data
        replay = bucket.upload(
            list(load_rows(SPEC, data, archive).rows), metadata={REPLAY_OF_METADATA: archive}
        )
        run_to_completion(bucket, [replay])
        assert bucket.snapshot() == state  # the move waits for a batch that changes something
        run_to_completion(bucket, [bucket.upload([staff(3, 10, name="C")])])
        assert not bucket.store.exists("latest/staff.json")
        every_version_once(bucket, [[staff(k, 0) for k in range(1, 6)], [staff(3, 10, name="C")]])
