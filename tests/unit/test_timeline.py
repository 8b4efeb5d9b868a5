from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.observation import Observation
from shared.timeline import as_of, timelines

T0 = datetime(2024, 11, 1, 9, 0)
SEEN = datetime(2026, 12, 2, 12, 0)  # when the ingest read the files (UTC)


def version(key, minutes, value, **audit):
    return {"id": key, "last_updated": (T0 + timedelta(minutes=minutes)).isoformat(),
            "value": value, **audit}  # fmt: skip


def seen(minutes, sequencer=-1):
    """The `_observed` of a version observed `minutes` after SEEN."""
    return Observation(SEEN + timedelta(minutes=minutes), sequencer).text


def test_versions_are_ordered_by_observation_not_by_last_updated():
    # baseline a; then C (stamped later) observed at 10; then "late" (stamped earlier) at 20:
    # latest holds "late", so it is current, and C came before it.
    latest = [version(1, 300, "late", _observed=seen(20))]
    history = [
        version(1, 0, "a", _superseded_at="x", _batch="b2", _observed=seen(0)),
        version(1, 500, "C", _superseded_at="x", _batch="b3", _observed=seen(10)),
    ]
    [first, second, third] = timelines(latest, history, "id")[1]
    assert [v.row["value"] for v in (first, second, third)] == ["a", "C", "late"]
    assert [v.valid_from for v in (first, second, third)] == [
        SEEN,
        SEEN + timedelta(minutes=10),
        SEEN + timedelta(minutes=20),
    ]
    assert first.valid_to == second.valid_from
    assert second.valid_to == third.valid_from
    assert third.valid_to is None
    assert third.observed == Observation.parse(seen(20))
    assert not [column for v in (first, second, third) for column in v.row if column[0] == "_"]


def test_as_of_between_two_observations_gives_the_earlier_one_whatever_the_stamps():
    latest = [version(1, 300, "late", _observed=seen(20))]
    history = [
        version(1, 0, "a", _observed=seen(0)),
        version(1, 500, "C", _observed=seen(10)),
    ]
    values = {
        m: [r["value"] for r in as_of(latest, history, "id", SEEN + timedelta(minutes=m))]
        for m in (-1, 0, 5, 10, 15, 20, 25)
    }
    assert values == {-1: [], 0: ["a"], 5: ["a"], 10: ["C"], 15: ["C"], 20: ["late"], 25: ["late"]}
    # an aware time is the same instant
    aware = (SEEN + timedelta(minutes=15)).replace(tzinfo=UTC)
    assert [r["value"] for r in as_of(latest, history, "id", aware)] == ["C"]


def test_a_late_delivery_in_history_sorts_by_its_observation_before_latest():
    # latest observed at 20; a delayed file observed at 5 went to history, after a (at 0)
    latest = [version(1, 10, "b", _observed=seen(20))]
    history = [
        version(1, 0, "a", _observed=seen(0)),
        version(1, 40, "delayed", _observed=seen(5)),
    ]
    assert [v.row["value"] for v in timelines(latest, history, "id")[1]] == ["a", "delayed", "b"]


def test_unobserved_versions_come_first_by_last_updated():
    latest = [version(1, 5, "new", _observed=seen(0))]
    history = [version(1, 40, "old2"), version(1, 20, "old1")]  # before observations were kept
    [one, two, three] = timelines(latest, history, "id")[1]
    assert [v.row["value"] for v in (one, two, three)] == ["old1", "old2", "new"]
    assert one.valid_from == T0 + timedelta(minutes=20)
    assert one.observed is None
    assert one.valid_to == two.valid_from == T0 + timedelta(minutes=40)
    assert two.valid_to == three.valid_from == SEEN


def test_one_batch_orders_its_versions_of_a_key_by_last_updated_then_sequencer():
    # one batch saw b then c (same observation); a later hand upload at the same instant
    # comes after them by its sequencer
    latest = [version(1, 50, "d", _observed=seen(0, sequencer=9))]
    history = [
        version(1, 30, "c", _observed=seen(0, sequencer=1)),
        version(1, 20, "b", _observed=seen(0, sequencer=1)),
    ]
    versions = timelines(latest, history, "id")[1]
    assert [v.row["value"] for v in versions] == ["b", "c", "d"]
    assert {v.valid_from for v in versions} == {SEEN}
    assert [r["value"] for r in as_of(latest, history, "id", SEEN)] == ["d"]


def test_latest_is_current_and_no_interval_ends_before_it_begins():
    # a batch observed at 10 saw an older version, then latest's row again (latest keeps its
    # observation, 0): the older version went to history observed after latest's row
    latest = [version(1, 50, "x", _observed=seen(0))]
    history = [version(1, 40, "w", _observed=seen(10))]
    [w, x] = timelines(latest, history, "id")[1]
    assert (w.row["value"], x.row["value"]) == ("w", "x")
    assert w.valid_to is not None
    assert w.valid_from <= w.valid_to == x.valid_from == SEEN
    assert x.valid_to is None


def test_silent_edit_keeps_both_versions_with_the_replaced_one_first():
    latest = [version(1, 0, "new")]
    history = [version(1, 0, "old", _superseded_at="x", _batch="b2")]
    assert [v.row["value"] for v in timelines(latest, history, "id")[1]] == ["old", "new"]


def test_a_version_seen_again_counts_once_but_a_row_that_went_back_is_kept():
    latest = [version(1, 0, "a", _observed=seen(30))]
    history = [
        version(1, 0, "a", _observed=seen(0)),
        version(1, 0, "a", _observed=seen(5)),  # re-read: the same version seen again
        version(1, 10, "b", _observed=seen(10)),
    ]
    versions = timelines(latest, history, "id")[1]
    assert [v.row["value"] for v in versions] == ["a", "b", "a"]
    assert [v.valid_from for v in versions] == [SEEN + timedelta(minutes=m) for m in (0, 10, 30)]


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


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 50), st.integers(0, 500)),
        min_size=1,
        unique_by=(lambda c: c[:2], lambda c: c[2]),
    )
)
def test_observed_as_of_matches_a_brute_force_replay(changes):
    # (key, observed minute, stamp): one version per key and observation, stamps unrelated to
    # the order. As the merge keeps them: latest the latest observed, history the others.
    versions = [version(k, stamp, f"{k}@{m}", _observed=seen(m)) for k, m, stamp in changes]
    newest: dict[int, dict[str, str]] = {}
    for row in versions:
        if row["id"] not in newest or row["_observed"] > newest[row["id"]]["_observed"]:
            newest[row["id"]] = row
    history = [r for r in versions if r is not newest[r["id"]]]
    for probe in range(-1, 52, 3):
        at = SEEN + timedelta(minutes=probe)
        expected: dict[int, dict[str, str]] = {}
        for row in versions:
            if Observation.parse(row["_observed"]).at <= at.replace(tzinfo=UTC):
                best = expected.get(row["id"])
                if best is None or row["_observed"] > best["_observed"]:
                    expected[row["id"]] = row
        got = as_of(newest.values(), history, "id", at)
        plain = [
            {k: v for k, v in expected[k].items() if k != "_observed"} for k in sorted(expected)
        ]
        assert got == plain
