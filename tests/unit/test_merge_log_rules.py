"""The merge rules for log-mode rows: commit order, tombstones, change metadata, TOAST.

Staged files are parsed as the merge parses them (`load_staged`), from the bytes the
log-capture ingest writes (`tests.rows.logged`); the state between batches is latest's rows
and tombstones plus the history rows committed so far, as the planner hands them over.
"""

import itertools
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.merge.rules import Known, merge
from services.merge.staged import load_staged
from shared.changes import Operation
from shared.observation import Observation
from shared.rows import row_json
from shared.tables import TABLES
from shared.versions import Tombstone, Version
from tests.rows import T0, log_file, logged, staff

SPEC = TABLES["staff"]
SOURCE = "staging/staff.json"


def at(minutes):
    """The observation of a polled file read at T0 + minutes (the database's clock)."""
    return Observation(T0 + timedelta(minutes=minutes))


def staged(changes, observed=None):
    report = load_staged(SPEC, log_file(changes), SOURCE, observed or at(999))
    assert report.problems == []
    return report.items


class Table:
    """latest (rows and tombstones) and history, as committed entries leave them."""

    def __init__(self) -> None:
        self.latest: dict[int, Any] = {}  # Version | Tombstone
        self.history: list[Any] = []  # HistoryRow

    def known(self) -> Known:
        known = Known({row_json(SPEC, h.row) for h in self.history})
        for h in self.history:
            known.versions.setdefault(h.row.staff_id, []).append(Version(h.row, h.observed))
        return known

    def apply(self, items: list[Any], batch: str, observed: Any = None) -> Any:
        result = merge(SPEC, self.latest, items, observed, batch, self.known(), SOURCE)
        assert result.problems == []
        self.latest.update(result.written)
        self.latest.update(result.removed)
        self.history += result.history
        return result

    def rows(self):
        return {k: v.row.first_name for k, v in self.latest.items() if hasattr(v, "row")}

    def names(self):
        return Counter(h.row.first_name for h in self.history)


def name(row):
    return row.first_name


def test_two_updates_of_one_key_in_one_file_are_two_versions_in_commit_order():
    t = Table()
    t.apply([staff(1, 0, name="A")], "base", at(0))
    result = t.apply(
        staged(
            [
                logged(staff(1, 5, name="B"), "update", 5, 10),
                logged(staff(1, 3, name="C"), "update", 6, 20),
            ]
        ),
        "log",
    )
    # commit order, not last_updated: C committed last
    assert t.rows() == {1: "C"}
    assert t.names() == Counter({"A": 1, "B": 1})
    assert result.updated == [1]
    by_name = {name(h.row): h for h in result.history}
    assert by_name["A"].change.op is Operation.INSERT  # polled, inferred: the key was new
    assert by_name["B"].change.op is Operation.UPDATE  # log: from the row
    assert by_name["B"].change.lsn == "16/B374000A"
    assert by_name["B"].change.xid == 700
    assert by_name["B"].superseded_at == T0 + timedelta(minutes=6)  # C's commit
    current = t.latest[1]
    assert current.observed == Observation(T0 + timedelta(minutes=6), 0x16_B374_0014)
    assert current.change.op is Operation.UPDATE


def test_a_delete_moves_latest_row_to_history_marked_deleted_once():
    t = Table()
    t.apply([staff(1, 0, name="A"), staff(2, 0, name="Z")], "base", at(0))
    result = t.apply(staged([logged(1, "delete", 10, 5, xid=9)]), "del")
    assert t.rows() == {2: "Z"}
    assert isinstance(t.latest[1], Tombstone)
    assert t.latest[1].deleted_at == T0 + timedelta(minutes=10)
    (gone,) = result.history
    assert (name(gone.row), gone.deleted_at, gone.batch) == ("A", T0 + timedelta(minutes=10), "del")
    assert gone.change.op is Operation.INSERT  # the op of the version it holds
    assert (result.deleted, result.removed.keys()) == ([1], {1})
    # the same file again, or a second copy of it staged as another batch: nothing changes
    for batch in ("del", "del-again"):
        again = t.apply(staged([logged(1, "delete", 10, 5, xid=9)]), batch)
        assert not again.changes_anything
    assert t.names() == Counter({"A": 1})


def test_delete_then_reinsert_in_one_file_and_across_files():
    t = Table()
    t.apply([staff(1, 0, name="A")], "base", at(0))
    t.apply(
        staged([logged(1, "delete", 10, 5), logged(staff(1, 11, name="B"), "insert", 11, 6)]),
        "f1",
    )
    assert t.rows() == {1: "B"}
    assert [(name(h.row), h.deleted) for h in t.history] == [("A", True)]
    assert t.latest[1].change.op is Operation.INSERT
    t.apply(staged([logged(1, "delete", 20, 7)]), "f2")
    result = t.apply(staged([logged(staff(1, 30, name="C"), "insert", 30, 8)]), "f3")
    assert result.inserted == [1]  # a re-insert is a new version
    assert t.rows() == {1: "C"}
    assert sorted((name(h.row), h.deleted) for h in t.history) == [("A", True), ("B", True)]


def test_changes_of_one_transaction_share_their_position_and_keep_file_order():
    t = Table()
    t.apply([staff(1, 0, name="A")], "base", at(0))
    one_tx = [logged(1, "delete", 10, 5), logged(staff(1, 10, name="B"), "insert", 10, 5)]
    t.apply(staged(one_tx), "tx")
    assert t.rows() == {1: "B"}
    assert not t.apply(staged(one_tx), "tx").changes_anything


def test_a_late_tombstone_never_removes_the_newer_row():
    t = Table()
    t.apply([staff(1, 0, name="A")], "base", at(0))
    t.apply(staged([logged(staff(1, 30, name="B"), "update", 30, 9)]), "f2")
    # the delete committed at minute 20 (and a re-insert...) arrives after minute 30's update
    late = t.apply(staged([logged(1, "delete", 20, 7)]), "f1")
    assert t.rows() == {1: "B"}
    assert not late.changes_anything  # A is in history already: nothing to record
    # with REPLICA IDENTITY FULL its old row is a version history does not hold: recorded
    old = staff(1, 15, name="Unseen")
    full = t.apply(staged([logged(old, "delete", 20, 7)]), "f1-full")
    assert [(name(h.row), h.deleted) for h in full.history] == [("Unseen", True)]
    assert full.late == [1]
    assert not t.apply(staged([logged(old, "delete", 20, 7)]), "f1-full").changes_anything


def test_an_older_insert_delivered_after_its_delete_stays_out_of_latest():
    t = Table()
    t.apply(staged([logged(1, "delete", 20, 7)]), "del")  # delivered first
    assert t.rows() == {}
    assert isinstance(t.latest[1], Tombstone)
    result = t.apply(staged([logged(staff(1, 10, name="A"), "insert", 10, 3)]), "ins")
    assert t.rows() == {}
    assert result.late == [1]
    assert t.names() == Counter({"A": 1})


def test_the_handoff_absorbs_changes_seen_both_ways():
    """The slot is created, then the baseline read at minute 30; the first log file holds
    changes committed before that read (the baseline has them) and after it."""
    t = Table()
    t.apply([staff(1, 12, name="A2"), staff(2, 0, name="Z")], "baseline", at(30))
    t.apply(
        staged(
            [
                logged(staff(1, 10, name="A1"), "insert", 10, 1),
                logged(staff(1, 12, name="A2"), "update", 12, 2),  # = the baseline's row
                logged(3, "delete", 20, 3),  # a key the baseline never saw
                logged(staff(1, 40, name="A3"), "update", 40, 4),
                logged(2, "delete", 45, 5),
            ]
        ),
        "log-1",
    )
    assert t.rows() == {1: "A3"}
    assert t.names() == Counter({"A1": 1, "A2": 1, "Z": 1})  # each version once
    assert [h.deleted for h in t.history if name(h.row) == "Z"] == [True]
    before = (dict(t.latest), list(t.history))
    # a baseline delivered late (observed before the log's changes) changes nothing either
    t.apply([staff(1, 12, name="A2"), staff(2, 0, name="Z")], "baseline", at(30))
    assert (t.latest, t.history) == before


def test_polled_history_rows_carry_an_inferred_op_and_their_last_updated():
    t = Table()
    t.apply([staff(1, 0, name="A")], "b1", at(1))
    t.apply([staff(1, 5, name="B")], "b2", at(2))
    result = t.apply([staff(1, 9, name="C")], "b3", at(3))
    (b,) = result.history
    assert b.change.op is Operation.UPDATE
    assert b.change.commit_ts == b.row.last_updated
    assert b.change.lsn is None


# ---- unchanged TOAST values ---------------------------------------------------------------


def test_unchanged_toast_values_are_filled_from_latest_and_from_the_file():
    t = Table()
    t.apply([staff(1, 0, name="A")], "base", at(0))
    edited = staff(1, 5, name="A").model_copy(update={"last_name": "Longname"})
    result = t.apply(
        staged(
            [
                logged(edited, "update", 5, 1, toast=("email_address", "first_name")),
                logged(staff(1, 6, name="B"), "update", 6, 2),
                logged(staff(1, 7, name="B"), "update", 7, 3, toast=("email_address",)),
            ]
        ),
        "toast",
    )
    assert [name(h.row) for h in result.history] == ["A", "A", "B"]
    assert result.history[1].row.last_name == "Longname"
    assert t.latest[1].row == staff(1, 7, name="B")
    # the same file again (a replay): each change is held, nothing is new
    again = [
        logged(edited, "update", 5, 1, toast=("email_address", "first_name")),
        logged(staff(1, 6, name="B"), "update", 6, 2),
    ]
    assert not t.apply(staged(again), "toast").changes_anything
    first_alone = [logged(edited, "update", 5, 1, toast=("email_address",))]
    assert not t.apply(staged(first_alone), "toast").changes_anything


def test_unchanged_toast_values_without_a_previous_version_are_a_problem():
    items = staged([logged(staff(7, 5), "update", 5, 1, toast=("email_address",))])
    result = merge(SPEC, {}, items, None, "b", Known(), SOURCE)
    (problem,) = result.problems
    assert (problem.source, problem.primary_key, problem.field) == (SOURCE, 7, "email_address")
    assert "no previous version" in problem.message


def _without(raw, name):
    return {k: v for k, v in raw.items() if k != name}


ROW = logged(staff(1), "insert", 0, 1)


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (_without(logged(1, "delete", 0, 1), "staff_id"), "staff_id", "a delete needs"),
        (_without(ROW, "_commit_ts"), None, "needs _op and _commit_ts"),
        ({**ROW, "_lsn": "nope"}, "_lsn", "not an LSN"),
        ({**ROW, "_op": "upsert"}, "_op", "Input should be"),
        ({**ROW, "_deleted": True}, "_deleted", "Extra inputs"),
        ({**ROW, "_toast_unchanged": ["last_name"]}, None, "for update rows"),
    ],
)
def test_bad_change_columns_are_problems_naming_the_field(raw, field, message):
    report = load_staged(SPEC, log_file([raw]), SOURCE, at(0))
    assert report.items == []
    assert any(p.field == field and message in p.message for p in report.problems), report.problems


def test_a_delete_needs_only_its_key_but_other_columns_must_be_the_whole_old_row():
    ok = load_staged(SPEC, log_file([logged(4, "delete", 1, 1)]), SOURCE, at(0))
    assert ok.problems == []
    assert ok.items[0].row is None
    partial = logged(4, "delete", 1, 1) | {"first_name": "Half"}
    bad = load_staged(SPEC, log_file([partial]), SOURCE, at(0))
    assert bad.items == []
    assert bad.problems


# ---- a property: log files in any delivery order, each applied at least once ---------------

KEYS = st.integers(1, 3)


@st.composite
def histories(draw):
    """A source history of inserts, updates and deletes (commit order), cut into files."""
    live: set[int] = set()
    changes = []
    for n in range(draw(st.integers(1, 12))):
        key = draw(KEYS)
        if key in live and draw(st.booleans()):
            changes.append(logged(key, "delete", n, n))
            live.discard(key)
        else:
            op = "update" if key in live else "insert"
            changes.append(logged(staff(key, n, name=f"k{key}n{n}"), op, n, n))
            live.add(key)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(changes) - 1)), max_size=3)))
    bounds = [0, *cuts, len(changes)]
    files = [changes[a:b] for a, b in itertools.pairwise(bounds) if changes[a:b]]
    return changes, files


@settings(max_examples=150, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_any_delivery_order_gives_the_source_and_every_version_once(drawn, rng):
    changes, files = drawn
    order = list(range(len(files))) * 2  # every file delivered twice (a redelivery)
    rng.shuffle(order)
    t = Table()
    for index in order:
        t.apply(staged(files[index]), f"b{index}")
    # latest = the source after the last change; history = every other version, once
    final: dict[int, str] = {}
    versions: list[str] = []
    for c in changes:
        if c["_op"] == "delete":
            final.pop(c["staff_id"], None)
        else:
            final[c["staff_id"]] = c["first_name"]
            versions.append(c["first_name"])
    assert t.rows() == final
    held = Counter(t.names()) + Counter(final.values())
    assert held == Counter(versions)
    # delivered in commit order (first deliveries), every version a delete ended is marked
    # deleted; out of order, a version may reach history before its delete (then unmarked)
    first = list(dict.fromkeys(order))
    if first == sorted(first):
        deleted = {h.row.first_name for h in t.history if h.deleted}
        assert deleted == _deleted_versions(changes)


def _deleted_versions(changes):
    current: dict[int, str] = {}
    out = set()
    for c in changes:
        if c["_op"] == "delete":
            out.add(current.pop(c["staff_id"]))
        else:
            current[c["staff_id"]] = c["first_name"]
    return out


def test_rows_given_as_models_are_polled_rows():
    result = merge(SPEC, {}, [staff(1)], at(0), "b")
    assert result.written[1].observed == at(0)
