from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.types import (
    format_money,
    format_timestamp,
    parse_date_text,
    parse_money,
    parse_timestamp,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-11-03T14:20:51.563000", datetime(2022, 11, 3, 14, 20, 51, 563000)),
        ("2022-11-03 14:20:51.563", datetime(2022, 11, 3, 14, 20, 51, 563000)),
        ("2022-12-15T11:25:10", datetime(2022, 12, 15, 11, 25, 10)),
    ],
)
def test_timestamps_in_every_real_form_are_accepted(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2022-11-03", "2022-11-03T25:00:00", "03/11/2022 14:20", "2022-11-03T14:20:51+00:00", "", 5],
)
def test_bad_timestamps_are_refused(text):
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(text)


def test_canonical_timestamp_always_has_six_fraction_digits():
    assert format_timestamp(datetime(2022, 12, 15, 11, 25, 10)) == "2022-12-15T11:25:10.000000"


@pytest.mark.parametrize("text", ["2022-02-30", "22-11-03", "2022-11-03T00:00:00", "tomorrow"])
def test_bad_dates_are_refused(text):
    with pytest.raises(ValueError, match="date"):
        parse_date_text(text)


def test_money_keeps_its_exact_text():
    assert format_money(parse_money(Decimal("3.94"))) == "3.94"
    assert format_money(parse_money("981451.44")) == "981451.44"
    assert format_money(parse_money(Decimal("3.90"))) == "3.9"
    assert format_money(parse_money(100)) == "100"
    assert format_money(parse_money(Decimal("1E+3"))) == "1000"


@pytest.mark.parametrize("value", [3.94, True, "abc", Decimal("NaN"), None])
def test_money_refuses_floats_and_non_numbers(value):
    with pytest.raises(ValueError, match="money"):
        parse_money(value)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=2))
def test_money_text_round_trips_exactly(amount):
    assert Decimal(format_money(parse_money(amount))) == amount
