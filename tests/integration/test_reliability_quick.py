"""The quick form of the reliability suite (`make reliability` runs the full one): each part
asserts its zeros, and split in three so xdist can run them side by side; then two broken
merges, to show the oracle is not the merge."""

import json
import subprocess
import sys

from services.merge import rules as merge_rules
from services.merge.commit import CommitLog
from tests.reliability.faults import run_faults
from tests.reliability.hostile import run_hostile
from tests.reliability.load import run_load
from tests.reliability.suite import MEMORY_LIMIT_BYTES, Params, quiet

QUICK = Params.quick_form(seed=1)


def test_fault_scenarios_lose_nothing_duplicate_nothing_and_replays_change_nothing():
    with quiet():
        tally = run_faults(QUICK.scenarios, QUICK.seed)
    assert tally.failures == []
    assert tally.scenarios == tally.scenarios_ok == QUICK.scenarios
    assert (tally.rows.lost, tally.rows.duplicated, tally.changed_by_replay) == (0, 0, 0)
    assert (tally.rows.not_newest, tally.rows.unexpected) == (0, 0)
    assert tally.new_event_ids_on_replay == tally.stuck == 0
    # what the scenarios are made of, so a change to the generator cannot quietly drop it
    assert tally.crashes > 0
    assert tally.races > 0
    assert tally.overwritten > 0
    assert tally.delivered_early > 0  # delivery order is not observation order
    assert tally.silent_edits > 0
    assert tally.ingest_observed > 0
    assert tally.layout_switches > 0
    assert tally.redeliveries > 0
    assert tally.replays > 0


def test_the_suite_sees_a_merge_that_loses_history(monkeypatch):
    """The oracle is not the merge: break the merge (log entries never copied to their history
    objects) and the same scenarios report rows lost."""
    monkeypatch.setattr(CommitLog, "_write_history", lambda self, entry: None)
    with quiet():
        tally = run_faults(4, QUICK.seed, fault_rate=0.0)
    assert tally.rows.lost > 0
    assert tally.scenarios_ok < tally.scenarios


def test_the_suite_sees_a_merge_that_ignores_observation_order(monkeypatch):
    """Break the merge (every file counts as observed after latest's rows) and a file
    delivered after a later-observed one takes latest: the suite reports latest wrong."""
    monkeypatch.setattr(merge_rules, "_earlier", lambda step, current: False)
    with quiet():
        tally = run_faults(4, QUICK.seed, fault_rate=0.0)
    assert tally.delivered_early > 0
    assert tally.rows.not_newest > 0
    assert tally.scenarios_ok < tally.scenarios


def test_hostile_inputs_are_each_handled_as_expected():
    with quiet():
        tally = run_hostile(quick=True)
    assert tally.failures == []
    assert tally.cases == tally.handled >= 30
    assert (tally.rows.lost, tally.rows.duplicated, tally.rows.not_newest) == (0, 0, 0)
    assert set(tally.by_outcome) == {"quarantined", "ignored", "rejected", "merged"}


def test_load_through_the_local_runtime_merges_everything_and_leaves_the_dlq_empty():
    with quiet():
        tally = run_load(QUICK.seed, versions=QUICK.load_versions)
    assert tally.failures == []
    assert tally.finished
    assert tally.files == 11 * QUICK.load_versions
    assert (tally.comparison.lost, tally.comparison.duplicated, tally.dlq_messages) == (0, 0, 0)
    assert tally.comparison.not_newest == 0
    assert tally.files_per_second > 0
    assert 0 < tally.peak_bytes < MEMORY_LIMIT_BYTES


# The soak measures every process of the runtime; run in a process of its own, so what this
# test worker holds from the tests before it is not counted as the runtime's.
SOAK_CHILD = """
import json, sys
from tests.reliability.soak import run_soak
from tests.reliability.suite import quiet
rows, merges = int(sys.argv[1]), int(sys.argv[2])
with quiet():
    tally = run_soak(rows=rows, merges=merges, sample_every=1)
last = tally.last
print(json.dumps({
    "failures": tally.failures,
    "within_bound": tally.within_bound,
    "samples": [s.merges for s in tally.samples],
    "bucket_bytes": last.bucket_bytes if last else 0,
    "expired_versions": tally.expired.versions if tally.expired else None,
    "bucket_after_a_day": tally.bucket_after_a_day,
    "worst": max((s.runtime_bytes - s.bound for s in tally.samples), default=0),
}))
"""


def test_a_soak_of_the_local_runtime_keeps_latest_right_and_memory_within_its_bound():
    args = [str(QUICK.soak_rows), str(QUICK.soak_merges)]
    done = subprocess.run(
        [sys.executable, "-c", SOAK_CHILD, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tally = json.loads(done.stdout.strip().splitlines()[-1])
    assert tally["failures"] == []
    assert tally["within_bound"], f"over the bound by {tally['worst']} bytes"
    assert tally["samples"] == list(range(1, QUICK.soak_merges + 1))
    assert tally["bucket_bytes"] > 0
    # a lifecycle day later the old copies of latest are gone, the current objects stay
    assert tally["expired_versions"] is not None
    assert tally["expired_versions"] >= QUICK.soak_merges
    assert 0 < tally["bucket_after_a_day"] < tally["bucket_bytes"]
