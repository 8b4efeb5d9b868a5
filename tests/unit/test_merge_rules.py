"""The merge rules, pure: versions are ordered by observation (docs/merge_protocol.md)."""

from collections import Counter
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.merge.rules import keys_needing_history, merge, primary_key
from shared.changes import Change, Operation
from shared.observation import Observation
from shared.rows import row_json
from shared.tables import TABLES
from shared.versions import Version
from tests.rows import staff

SPEC = TABLES["staff"]


def seen(n):
    """The n-th observation (later n, later observation)."""
    return Observation(datetime(2026, 12, 1, 12, 0, 0) + timedelta(minutes=n))


def name(row):
    return row.first_name


def held(*versions):
    return {primary_key(SPEC, v.row): v for v in versions}


def plain(written):
    """Written versions without their change metadata (checked on their own)."""
    return {k: Version(v.row, v.observed) for k, v in written.items()}


def test_absent_key_is_inserted_with_its_observation():
    result = merge(SPEC, {}, [staff(9, 1), staff(1, 1)], seen(1), "b1")
    assert plain(result.written) == {
        1: Version(staff(1, 1), seen(1)),
        9: Version(staff(9, 1), seen(1)),
    }
    assert {v.change.op if v.change else None for v in result.written.values()} == {
        Operation.INSERT
    }
    assert sorted(result.inserted) == [1, 9]
    assert result.history == []


def test_a_later_observation_replaces_whatever_last_updated_says():
    # the transaction that started first committed last: its row is stamped older
    old, new = Version(staff(1, 20), seen(1)), staff(1, 10, name="Committed last")
    result = merge(SPEC, held(old), [new], seen(2), "b2")
    assert plain(result.written) == {1: Version(new, seen(2))}
    assert result.written[1].change == Change(Operation.UPDATE, new.last_updated)
    assert result.updated == [1]
    assert [(h.row, h.observed, h.batch) for h in result.history] == [(old.row, seen(1), "b2")]


def test_an_earlier_observation_never_reverts_latest():
    current = Version(staff(1, 10, name="Now"), seen(5))
    result = merge(SPEC, held(current), [staff(1, 20, name="Old")], seen(2), "b3")
    assert result.written == {}
    assert result.late == [1]
    assert [name(h.row) for h in result.history] == ["Old"]


def test_silent_edits_are_ordered_by_observation_not_arrival():
    first, second = staff(1, 0, name="First"), staff(1, 0, name="Second")
    after_second = merge(SPEC, {}, [second], seen(2), "b2").written[1]
    result = merge(SPEC, held(after_second), [first], seen(1), "b1")
    assert result.written == {}  # the first edit arrived last: latest keeps the second
    assert [name(h.row) for h in result.history] == ["First"]


def test_seeing_latest_again_adds_no_version():
    current = Version(staff(1, 0), seen(1))
    for observed in (seen(0), seen(1)):
        result = merge(SPEC, held(current), [staff(1, 0)], observed, "b")
        assert not result.changes_anything
        assert result.unchanged == [1]
    later = merge(SPEC, held(current), [staff(1, 0)], seen(2), "b")
    assert later.unchanged == [1]
    assert later.history == []
    assert plain(later.written) == {1: Version(staff(1, 0), seen(2))}  # only its observation moves


def test_in_file_versions_are_ordered_by_last_updated_and_the_older_go_to_history_once():
    rows = [staff(1, 30, name="C"), staff(1, 10, name="A"), staff(1, 20, name="B")]
    result = merge(SPEC, {}, rows, seen(1), "b")
    assert name(result.written[1].row) == "C"
    assert [name(h.row) for h in result.history] == ["A", "B"]
    assert keys_needing_history(SPEC, {}, rows, seen(1)) == {1}  # A and B may be there
    # the same batch again (a redelivery): observed when latest's row was, so nothing new
    known = {row_json(SPEC, h.row) for h in result.history}
    again = merge(SPEC, held(result.written[1]), rows, seen(1), "b", known)
    assert not again.changes_anything


def test_a_batch_observed_later_needs_no_history_read():
    current = Version(staff(1, 0), seen(1))
    assert keys_needing_history(SPEC, held(current), [staff(1, 5)], seen(2)) == set()
    assert keys_needing_history(SPEC, held(current), [staff(1, 5)], seen(0)) == {1}


# ---- a property: any order of delivery gives latest = the last observation, each version once


def _apply(batches, order, latest=None, history=None):
    latest = dict(latest or {})
    history = list(history or [])
    for index in order:
        observed, rows = batches[index]
        result = merge(SPEC, latest, rows, observed, f"b{index}", set(history))
        latest.update(result.written)
        history += [row_json(SPEC, h.row) for h in result.history]
    return latest, history


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(1, 3), st.integers(0, 5), st.sampled_from("ABC")),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=5,
    ),
    st.randoms(use_true_random=False),
)
def test_any_delivery_order_keeps_the_last_observation_and_every_version_once(files, rng):
    # distinct contents per (key, batch, row): no real reverts, so text identifies a version
    batches = [
        (seen(i), [staff(k, m, name=f"{n}{i}{j}") for j, (k, m, n) in enumerate(rows)])
        for i, rows in enumerate(files)
    ]
    if len(batches) > 1 and rng.random() < 0.5:  # a later batch sees an earlier row again
        batches[-1][1].append(batches[0][1][0])
    order = list(range(len(batches)))
    rng.shuffle(order)
    latest, history = _apply(batches, order)
    # the oracle, in observation order: per key, each batch's last version is current; the
    # row it replaces is one more copy in history; older versions count once per content
    expected: dict[int, str] = {}
    copies: Counter[str] = Counter()
    for _, rows in batches:
        in_file: dict[int, list[str]] = {}
        for row in sorted(rows, key=lambda r: r.last_updated):  # stable: file order on ties
            texts = in_file.setdefault(row.staff_id, [])
            text = row_json(SPEC, row)
            if text in texts:
                texts.remove(text)
            texts.append(text)
        for key, (*older, top) in in_file.items():
            if expected.get(key) not in (None, top):
                copies[expected[key]] += 1
            expected[key] = top
            copies.update({t for t in older if t != top and not copies[t] and t != top})
    final = Counter(expected.values())
    assert {k: row_json(SPEC, v.row) for k, v in latest.items()} == expected
    counts = Counter(history + [row_json(SPEC, v.row) for v in latest.values()])
    everything = copies + final
    assert set(counts) == set(everything)  # nothing lost
    # any delivery order keeps at most the copies the observation order accounts for
    assert all(counts[t] <= everything[t] for t in counts), (counts, everything)
    if order == sorted(order):
        assert counts == everything
    # and applying everything again changes nothing
    again_latest, again_history = _apply(batches, order[::-1], latest, history)
    assert again_latest == latest
    assert again_history == history


def test_a_file_with_latest_row_then_a_newer_one_sends_that_row_to_history_once():
    current = Version(staff(1, 0, name="a"), seen(1))
    result = merge(
        SPEC, held(current), [staff(1, 0, name="a"), staff(1, 5, name="b")], seen(2), "b"
    )
    assert name(result.written[1].row) == "b"
    assert [name(h.row) for h in result.history] == ["a"]


def test_seeing_latest_row_again_later_makes_that_the_observation_to_beat():
    # A=[a], B=[b], C=[a] observed in that order, delivered A, C, B: latest must be C's a
    after_a = merge(SPEC, {}, [staff(1, 0, name="a")], seen(1), "A").written[1]
    after_c = merge(SPEC, held(after_a), [staff(1, 0, name="a")], seen(3), "C")
    assert after_c.unchanged == [1]
    assert after_c.history == []
    assert after_c.written[1].observed == seen(3)
    after_b = merge(SPEC, held(after_c.written[1]), [staff(1, 9, name="b")], seen(2), "B")
    assert after_b.written == {}
    assert [name(h.row) for h in after_b.history] == ["b"]
