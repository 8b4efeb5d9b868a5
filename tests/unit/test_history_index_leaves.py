"""Leaves of the history index: a split loses, reorders and misplaces nothing."""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import history_index
from shared.history_index import Line, dump_leaf, parse_leaf, split_leaf
from shared.types import INT64_MAX, INT64_MIN

lines = st.lists(
    st.builds(
        Line,
        st.integers(-5, 40),
        st.sampled_from(["history/t/a_1.json", "history/t/b_2.json"]),
        st.integers(0, 9),
        st.just('{"staff_id":1,"first_name":"A, \\"B\\"","_batch":"x"}'),
    ),
    max_size=60,
)


@pytest.fixture
def small_leaves(monkeypatch):
    monkeypatch.setattr(history_index, "LEAF_ROWS", 4)


@pytest.mark.usefixtures("small_leaves")
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines)
def test_a_split_keeps_every_line_in_order_inside_its_range(drawn):
    ordered = sorted(drawn)
    leaves = split_leaf(ordered, INT64_MIN, INT64_MAX)
    assert [line for *_, part in leaves for line in part] == ordered
    assert leaves[0][0] == INT64_MIN
    assert leaves[-1][1] == INT64_MAX
    for (_, high, _), (low, _, _) in itertools.pairwise(leaves):
        assert low == high + 1  # contiguous ranges
    for low, high, part in leaves:
        assert all(low <= line.key <= high for line in part)
        assert len(part) <= history_index.LEAF_ROWS or len({line.key for line in part}) == 1


@given(lines)
def test_a_leaf_reads_back_what_was_written(drawn):
    assert parse_leaf(dump_leaf(sorted(drawn))) == sorted(drawn)


@given(st.text(st.characters(exclude_characters=",", exclude_categories=["Cs"])))
def test_a_leaf_reads_back_any_object_name_without_a_comma(name):
    # parse_leaf reads a name without escapes straight from between its quotes
    line = Line(7, f"history/t/{name}.json", 3, '{"staff_id":7}')
    assert parse_leaf(dump_leaf([line])) == [line]
