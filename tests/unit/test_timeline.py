from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ops.timeline import as_of, timelines

T0 = datetime(2024, 11, 1, 9, 0)


def version(key, minutes, value, **audit):
    return {"id": key, "last_updated": (T0 + timedelta(minutes=minutes)).isoformat(),
            "value": value, **audit}  # fmt: skip


def test_timeline_orders_by_last_updated_not_by_where_rows_were_written():
    seen = "2026-12-02T12:00:00.000000Z"  # latest and history rows carry `_observed`
    latest = [version(1, 40, "c", _observed=seen)]
    history = [  # b: a late arrival
        version(1, 0, "a", _batch="b1", _observed=seen),
        version(1, 20, "b", _batch="b3", _observed=seen),
    ]
    [first, second, third] = timelines(latest, history, "id")[1]
    assert [v.row["value"] for v in (first, second, third)] == ["a", "b", "c"]
    assert first.valid_to == second.valid_from == T0 + timedelta(minutes=20)
    assert third.valid_to is None
    assert not [column for v in (first, second, third) for column in v.row if column[0] == "_"]


def test_silent_edit_keeps_both_versions_with_the_replaced_one_first():
    latest = [version(1, 0, "new")]
    history = [version(1, 0, "old", _superseded_at="x", _batch="b2")]
    assert [v.row["value"] for v in timelines(latest, history, "id")[1]] == ["old", "new"]


def test_as_of_gives_each_key_its_version_at_that_time_and_omits_unborn_keys():
    latest = [version(1, 40, "c"), version(2, 30, "z")]
    history = [version(1, 0, "a"), version(1, 20, "b")]
    at = T0 + timedelta(minutes=25)
    assert [(r["id"], r["value"]) for r in as_of(latest, history, "id", at)] == [(1, "b")]
    assert as_of(latest, history, "id", T0 - timedelta(seconds=1)) == []


@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 50)), min_size=1, unique=True))
def test_as_of_matches_a_brute_force_replay(changes):
    # Oracle: the newest version at or before each probe time, found by scanning all versions.
    versions = [version(k, m, f"{k}@{m}") for k, m in changes]
    newest: dict[int, dict[str, str]] = {}
    for row in versions:
        if row["id"] not in newest or row["last_updated"] > newest[row["id"]]["last_updated"]:
            newest[row["id"]] = row
    history = [r for r in versions if r is not newest[r["id"]]]
    for probe in range(-1, 52, 5):
        at = T0 + timedelta(minutes=probe)
        expected: dict[int, dict[str, str]] = {}
        for row in versions:
            if datetime.fromisoformat(row["last_updated"]) <= at:
                best = expected.get(row["id"])
                if best is None or row["last_updated"] > best["last_updated"]:
                    expected[row["id"]] = row
        got = as_of(newest.values(), history, "id", at)
        assert got == [expected[k] for k in sorted(expected)]
