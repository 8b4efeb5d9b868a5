"""The pure warehouse derivations: record ids, facts, the calendar, money."""

from datetime import date, datetime
from decimal import Decimal

import pytest

from services.transform import parquet
from services.transform.warehouse import (
    DIM_DESIGN,
    FACT_SALES_ORDER,
    WAREHOUSE_TABLES,
    Deleted,
    MoneyPrecisionError,
    build_dimension,
    dim_date,
    fact_rows,
    money,
    partition_month,
    record_id,
)
from shared.schemas import Design, SalesOrder

ORDER = {
    "sales_order_id": 17,
    "created_at": datetime(2024, 11, 1, 9, 0, 0, 123000),
    "last_updated": datetime(2024, 11, 1, 9, 0, 0, 123000),
    "design_id": 3,
    "staff_id": 4,
    "counterparty_id": 5,
    "units_sold": 1000,
    "unit_price": Decimal("3.5"),
    "currency_id": 1,
    "agreed_delivery_date": "2024-11-05",
    "agreed_payment_date": "2024-11-06",
    "agreed_delivery_location_id": 3,
}


def order(**changes):
    return SalesOrder.model_validate({**ORDER, **changes})


def test_record_id_is_a_stable_63_bit_id_of_the_version():
    first = record_id("sales_order", order())
    assert first == record_id("sales_order", order())  # same version, same id
    assert 0 <= first < 2**63
    moved = order(agreed_delivery_location_id=5, last_updated=datetime(2024, 11, 2))
    silent_edit = order(agreed_delivery_location_id=5)  # same last_updated, other content
    ids = {first, record_id("sales_order", moved), record_id("sales_order", silent_edit)}
    assert len(ids) == 3


def test_one_fact_row_per_version_in_version_order():
    later = order(agreed_delivery_location_id=5, last_updated=datetime(2024, 11, 2, 8))
    rows = fact_rows("sales_order", [later, order(), order()])  # a duplicate collapses
    assert [r["agreed_delivery_location_id"] for r in rows] == [3, 5]
    first = rows[0]
    assert first["sales_staff_id"] == 4
    assert first["created_date"] == date(2024, 11, 1)
    assert str(first["created_time"]) == "09:00:00.123000"
    assert first["agreed_payment_date"] == date(2024, 11, 6)
    assert first["unit_price"] == Decimal("3.50")
    assert partition_month(first) == "2024-11"
    assert list(first) == list(FACT_SALES_ORDER.column_names)


def test_dim_date_is_a_gapless_calendar_with_monday_zero():
    rows = dim_date(date(2024, 12, 30), date(2025, 1, 5))
    assert len(rows) == 7
    monday = rows[0]
    assert monday["day_of_week"] == 0
    assert (monday["day_name"], monday["month_name"], monday["quarter"]) == (
        "Monday",
        "December",
        4,
    )
    assert rows[-1]["day_name"] == "Sunday"
    assert rows[3]["quarter"] == 1


def test_money_keeps_two_decimals_and_refuses_to_round():
    assert money(Decimal("3")) == Decimal("3.00")
    with pytest.raises(MoneyPrecisionError):
        money(Decimal("3.005"))


SAMPLES = {
    "int": 7,
    "record_id": 2**62,
    "text": "x",
    "bool": True,
    "date": date(2024, 1, 1),
    "time": datetime(2024, 1, 1, 9, 30, 1, 5000).time(),
    "money": Decimal("2.50"),
}


@pytest.mark.parametrize("name", sorted(WAREHOUSE_TABLES))
def test_parquet_round_trip_is_exact_and_deterministic(name):
    table = WAREHOUSE_TABLES[name]
    rows = [
        {c.name: SAMPLES[c.kind] for c in table.columns},
        {c.name: None if c.nullable else SAMPLES[c.kind] for c in table.columns},
    ]
    data = parquet.encode(table, rows)
    assert parquet.decode(table, data) == rows
    assert parquet.encode(table, rows) == data


def test_a_deleted_member_is_kept_flagged_and_live_members_are_not():
    def design(design_id: int) -> Design:
        stamp = datetime(2024, 1, 1, 9)
        return Design(
            design_id=design_id,
            created_at=stamp,
            last_updated=stamp,
            design_name=f"d{design_id}",
            file_location="/x",
            file_name=f"d{design_id}.json",
        )

    at = datetime(2024, 2, 3, 4, 5, 6, 7)
    rows = build_dimension(
        DIM_DESIGN, {"design": [design(1)]}, {"design": {2: Deleted(design(2), at)}}
    )
    assert [(r["design_id"], r["deleted_date"], r["deleted_time"]) for r in rows] == [
        (1, None, None),
        (2, at.date(), at.time()),
    ]
    assert parquet.decode(DIM_DESIGN, parquet.encode(DIM_DESIGN, rows)) == rows
