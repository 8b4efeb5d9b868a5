"""The merge rules (DESIGN §3), pure: examples per rule, then a property over random histories."""

from collections import Counter
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.merge.logic import keys_needing_history, merge, primary_key
from shared.history import HistoryRow, dump_history, load_history
from shared.rows import row_json
from shared.schemas import RowModel, Staff
from shared.tables import TABLES

SPEC = TABLES["staff"]
T0 = datetime(2024, 11, 14, 9, 0, 0)


def staff(key, minutes, name="Jeremie", created=0):
    return Staff(
        staff_id=key,
        first_name=name,
        last_name="Franey",
        department_id=2,
        email_address=f"s{key}@terrifictotes.com",
        created_at=T0 + timedelta(minutes=created),
        last_updated=T0 + timedelta(minutes=minutes),
    )


def texts(rows):
    return [row_json(SPEC, r) for r in rows]


def test_absent_key_is_inserted_and_latest_is_sorted():
    result = merge(SPEC, [staff(5, 0)], [staff(9, 1), staff(1, 1)], "b1")
    assert [r.last_updated.minute for r in result.latest] == [1, 0, 1]
    assert texts(result.latest) == texts([staff(1, 1), staff(5, 0), staff(9, 1)])
    assert result.inserted == [9, 1]
    assert result.history == []


def test_newer_row_replaces_and_old_row_goes_to_history_with_audit():
    old, new = staff(1, 0), staff(1, 20, name="Jo")
    result = merge(SPEC, [old], [new], "b2")
    assert texts(result.latest) == texts([new])
    assert result.updated == [1]
    assert result.history == [HistoryRow(old, new.last_updated, "b2")]


def test_same_row_again_writes_nothing():
    row = staff(1, 0)
    result = merge(SPEC, [row], [row], "b3")
    assert result.unchanged == [1]
    assert not result.changes_anything


def test_silent_edit_same_last_updated_other_content_is_an_update():
    old, edited = staff(1, 0), staff(1, 0, name="Edited")
    result = merge(SPEC, [old], [edited], "b4")
    assert texts(result.latest) == texts([edited])
    assert result.updated == [1]
    assert result.history == [HistoryRow(old, old.last_updated, "b4")]


def test_late_arrival_keeps_latest_and_goes_to_history_once():
    newest, older = staff(1, 40), staff(1, 20, name="Older")
    result = merge(SPEC, [newest], [older], "b5")
    assert texts(result.latest) == texts([newest])
    assert result.late == [1]
    assert result.history == [HistoryRow(older, newest.last_updated, "b5")]
    again = merge(SPEC, [newest], [older], "b6", history=[older])
    assert not again.changes_anything


def test_late_arrival_is_superseded_by_the_next_known_version():
    v0, v1, v2 = staff(1, 0), staff(1, 20, name="B"), staff(1, 40, name="C")
    result = merge(SPEC, [v2], [v1], "b7", history=[v0])
    assert result.history == [HistoryRow(v1, v2.last_updated, "b7")]
    older = merge(SPEC, [v2], [staff(1, 10, name="A2")], "b8", history=[v1])
    assert older.history[0].superseded_at == v1.last_updated


def test_the_replaced_row_goes_to_history_even_if_some_history_object_has_it():
    """A copy in history can only be an uncommitted merge's (latest still holds the row)."""
    held, newer = staff(1, 0), staff(1, 20, name="Jo")
    result = merge(SPEC, [held], [newer], "b10", history=[held])
    assert result.history == [HistoryRow(held, newer.last_updated, "b10")]
    late = staff(1, 10, name="Late")
    again = merge(SPEC, [held], [newer, late], "b11", history=[held, late])
    assert [h.row for h in again.history] == [held]


def test_duplicates_in_one_file_collapse_to_the_newest_and_keep_the_rest():
    a, b, c = staff(1, 0), staff(1, 20, name="B"), staff(1, 40, name="C")
    result = merge(SPEC, [], [c, a, b, a], "b9")
    assert texts(result.latest) == texts([c])
    assert [h.row for h in result.history] == [a, b]
    assert [h.superseded_at for h in result.history] == [b.last_updated, c.last_updated]
    assert keys_needing_history(SPEC, [], [c, a]) == {1}
    assert keys_needing_history(SPEC, [], [c]) == set()


def test_history_rows_round_trip_with_audit_columns():
    item = HistoryRow(staff(3, 5), T0 + timedelta(minutes=9), "abc123")
    data = dump_history(SPEC, [item])
    assert b'"_superseded_at":"2024-11-14T09:09:00.000000","_batch":"abc123"}' in data
    assert load_history(SPEC, data, "h.json") == [item]


# ---- property: random version histories, split into files, duplicated and shuffled ----------


@st.composite
def deliveries(draw):
    """Distinct versions per key (distinct last_updated), spread over staging files."""
    versions = []
    for key in range(1, draw(st.integers(1, 6)) + 1):
        minutes = draw(st.lists(st.integers(0, 500), min_size=1, max_size=5, unique=True))
        versions += [staff(key, m, name=f"n{key}-{m}") for m in minutes]
    files = draw(
        st.lists(
            st.lists(st.sampled_from(versions), min_size=0, max_size=8),
            min_size=1,
            max_size=6,
        )
    )
    # every version reaches at least one file; then some files are delivered twice
    files.append([v for v in versions if not any(v in f for f in files)])
    order = draw(st.permutations(files + draw(st.lists(st.sampled_from(files), max_size=3))))
    return versions, order


def oracle(versions):
    """Newest version per key to latest, every other version to history."""
    newest: dict[int, Staff] = {}
    for v in versions:
        if v.staff_id not in newest or v.last_updated > newest[v.staff_id].last_updated:
            newest[v.staff_id] = v
    latest = sorted(newest.values(), key=lambda r: r.staff_id)
    return set(texts(latest)), set(texts(versions)) - set(texts(latest))


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_any_delivery_order_gives_latest_newest_and_history_the_rest(case):
    versions, files = case
    latest: list[RowModel] = []
    history_objects: dict[str, list[HistoryRow]] = {}
    for number, staged in enumerate(files):
        batch = f"b{number}"
        needed = keys_needing_history(SPEC, latest, staged)
        known = [h.row for rows in history_objects.values() for h in rows]
        result = merge(
            SPEC, latest, staged, batch, [r for r in known if primary_key(SPEC, r) in needed]
        )
        if result.history:
            history_objects[batch] = result.history
        latest = result.latest

    history = [h for rows in history_objects.values() for h in rows]
    expected_latest, expected_history = oracle(versions)
    assert set(texts(latest)) == expected_latest
    assert len(latest) == len(expected_latest)
    history_texts = texts(h.row for h in history)
    assert [t for t, n in Counter(history_texts).items() if n > 1] == []
    assert set(history_texts) == expected_history
    assert all(h.superseded_at > h.row.last_updated for h in history)
