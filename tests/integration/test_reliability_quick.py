"""The quick form of the reliability suite (`make reliability` runs the full one): each part
asserts its zeros, and split in three so xdist can run them side by side."""

from services.merge import service as merge_service
from tests.reliability.faults import run_faults
from tests.reliability.hostile import run_hostile
from tests.reliability.load import run_load
from tests.reliability.suite import Params, quiet

QUICK = Params.quick_form(seed=1)


def test_fault_scenarios_lose_nothing_duplicate_nothing_and_replays_change_nothing():
    with quiet():
        tally = run_faults(QUICK.scenarios, QUICK.seed)
    assert tally.failures == []
    assert tally.scenarios == tally.scenarios_ok == QUICK.scenarios
    assert (tally.rows.lost, tally.rows.duplicated, tally.changed_by_replay) == (0, 0, 0)
    assert tally.new_event_ids_on_replay == tally.stuck == 0
    assert tally.crashes > 0
    assert tally.races > 0
    assert tally.overwritten > 0


def test_the_suite_sees_a_merge_that_loses_history(monkeypatch):
    """The oracle is not the merge: break the merge (history objects written empty) and the
    same scenarios report rows lost."""
    monkeypatch.setattr(merge_service, "dump_history", lambda spec, rows: b"[]")
    with quiet():
        tally = run_faults(4, QUICK.seed, fault_rate=0.0)
    assert tally.rows.lost > 0
    assert tally.scenarios_ok < tally.scenarios


def test_hostile_inputs_are_each_handled_as_expected():
    with quiet():
        tally = run_hostile(quick=True)
    assert tally.failures == []
    assert tally.cases == tally.handled >= 30
    assert (tally.rows.lost, tally.rows.duplicated) == (0, 0)
    assert set(tally.by_outcome) == {"quarantined", "ignored", "rejected", "merged"}


def test_load_through_the_local_runtime_merges_everything_and_leaves_the_dlq_empty():
    with quiet():
        tally = run_load(QUICK.seed, versions=QUICK.load_versions)
    assert tally.failures == []
    assert tally.finished
    assert tally.files == 11 * QUICK.load_versions
    assert (tally.comparison.lost, tally.comparison.duplicated, tally.dlq_messages) == (0, 0, 0)
    assert tally.files_per_second > 0
