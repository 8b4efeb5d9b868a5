"""The warehouse tables (reference/totesys_schema.md "Target warehouse") and their derivations.

Pure code: source rows (validated `RowModel`s) in, warehouse rows (dicts of Python values) out.
Each table's columns are declared once here, with a neutral column kind that the Parquet
writer and the PostgreSQL loader each map to their own type.

Facts keep every version of a source row. A version's record id is derived from the version
itself (its table and canonical row text, which holds the key, last_updated and content), so
replays, out-of-order events and rebuilds give every version the same id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from shared import schemas
from shared.layout import WAREHOUSE_PARTITION_COLUMN, manifest_key_in, warehouse_prefix
from shared.rows import row_json
from shared.schemas import RowModel
from shared.tables import get_table

Row = dict[str, Any]


class Kind(StrEnum):
    """What a column holds; each output maps it to its own type."""

    INT = "int"
    RECORD_ID = "record_id"  # 63-bit, from a hash
    TEXT = "text"
    DATE = "date"
    TIME = "time"
    MONEY = "money"  # numeric with two decimal places
    BOOL = "bool"
    BIGINT = "bigint"  # a source integer (64-bit)
    TIMESTAMP = "timestamp"  # naive UTC, microseconds


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False


def parse_columns(spec: str) -> tuple[Column, ...]:
    """`"a:int b:text? c:date"` -> columns (`?` = nullable)."""
    columns = []
    for item in spec.split():
        name, _, kind = item.partition(":")
        nullable = kind.endswith("?")
        columns.append(Column(name, Kind(kind.rstrip("?")), nullable))
    return tuple(columns)


# A source dimension's member whose source row was deleted: when (null: live).
_DELETED = " deleted_date:date? deleted_time:time?"
_STAMPS = "created_date:date created_time:time last_updated_date:date last_updated_time:time"


@dataclass(frozen=True)
class WarehouseTable:
    name: str
    columns: tuple[Column, ...]
    key: str  # the primary key (the record id of a fact)
    # Source tables whose change changes this table's rows.
    sources: tuple[str, ...]
    fact_of: str | None = None  # the source table a fact keeps every version of
    natural_key: str | None = None  # the fact's id of the business object (sales_order_id)
    # A large dimension an event updates by the keys it names (services/transform/keyed.py).
    by_key: bool = False
    # The source table whose row versions this change table keeps (services/transform/changes.py).
    changes_of: str | None = None
    # The folder of its files (None: `warehouse/<name>/`).
    location: str | None = None

    @property
    def is_fact(self) -> bool:
        return self.fact_of is not None

    @property
    def prefix(self) -> str:
        """Where its Parquet files and manifest live (its Glue table's location)."""
        return self.location or warehouse_prefix(self.name)

    @property
    def manifest_key(self) -> str:
        return manifest_key_in(self.prefix)

    @property
    def partition_column(self) -> str | None:
        """The Hive partition of its files (facts: `created_month`), None: one folder."""
        return WAREHOUSE_PARTITION_COLUMN if self.is_fact else None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def date_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.kind is Kind.DATE)


FACT_SALES_ORDER = WarehouseTable(
    "fact_sales_order",
    parse_columns(
        f"sales_record_id:record_id sales_order_id:int {_STAMPS} sales_staff_id:int "
        "counterparty_id:int units_sold:int unit_price:money currency_id:int design_id:int "
        "agreed_payment_date:date agreed_delivery_date:date agreed_delivery_location_id:int"
    ),
    key="sales_record_id",
    sources=("sales_order",),
    fact_of="sales_order",
    natural_key="sales_order_id",
)
FACT_PURCHASE_ORDER = WarehouseTable(
    "fact_purchase_order",
    parse_columns(
        f"purchase_record_id:record_id purchase_order_id:int {_STAMPS} staff_id:int "
        "counterparty_id:int item_code:text item_quantity:int item_unit_price:money "
        "currency_id:int agreed_delivery_date:date agreed_payment_date:date "
        "agreed_delivery_location_id:int"
    ),
    key="purchase_record_id",
    sources=("purchase_order",),
    fact_of="purchase_order",
    natural_key="purchase_order_id",
)
FACT_PAYMENT = WarehouseTable(
    "fact_payment",
    parse_columns(
        f"payment_record_id:record_id payment_id:int {_STAMPS} transaction_id:int "
        "counterparty_id:int payment_amount:money currency_id:int payment_type_id:int "
        "paid:bool payment_date:date"
    ),
    key="payment_record_id",
    sources=("payment",),
    fact_of="payment",
    natural_key="payment_id",
)
DIM_DATE = WarehouseTable(
    "dim_date",
    parse_columns(
        "date_id:date year:int month:int day:int day_of_week:int day_name:text "
        "month_name:text quarter:int"
    ),
    key="date_id",
    sources=(),  # generated from the facts' dates
)
DIM_STAFF = WarehouseTable(
    "dim_staff",
    parse_columns(
        "staff_id:int first_name:text last_name:text department_name:text location:text "
        "email_address:text" + _DELETED
    ),
    key="staff_id",
    sources=("staff", "department"),
)
DIM_LOCATION = WarehouseTable(
    "dim_location",
    parse_columns(
        "location_id:int address_line_1:text address_line_2:text? district:text? city:text "
        "postal_code:text country:text phone:text" + _DELETED
    ),
    key="location_id",
    sources=("address",),
)
DIM_DESIGN = WarehouseTable(
    "dim_design",
    parse_columns("design_id:int design_name:text file_location:text file_name:text" + _DELETED),
    key="design_id",
    sources=("design",),
)
DIM_CURRENCY = WarehouseTable(
    "dim_currency",
    parse_columns("currency_id:int currency_code:text currency_name:text" + _DELETED),
    key="currency_id",
    sources=("currency",),
)
DIM_COUNTERPARTY = WarehouseTable(
    "dim_counterparty",
    parse_columns(
        "counterparty_id:int counterparty_legal_name:text counterparty_legal_address_line_1:text "
        "counterparty_legal_address_line_2:text? counterparty_legal_district:text? "
        "counterparty_legal_city:text counterparty_legal_postal_code:text "
        "counterparty_legal_country:text counterparty_legal_phone_number:text" + _DELETED
    ),
    key="counterparty_id",
    sources=("counterparty", "address"),
)
DIM_PAYMENT_TYPE = WarehouseTable(
    "dim_payment_type",
    parse_columns("payment_type_id:int payment_type_name:text" + _DELETED),
    key="payment_type_id",
    sources=("payment_type",),
)
DIM_TRANSACTION = WarehouseTable(
    "dim_transaction",
    parse_columns(
        "transaction_id:int transaction_type:text sales_order_id:int? purchase_order_id:int?"
        + _DELETED
    ),
    key="transaction_id",
    sources=("transaction",),
    by_key=True,
)

FACTS: tuple[WarehouseTable, ...] = (FACT_SALES_ORDER, FACT_PURCHASE_ORDER, FACT_PAYMENT)
# Dimensions built from source tables (dim_date is generated from the facts instead).
SOURCE_DIMENSIONS: tuple[WarehouseTable, ...] = (
    DIM_STAFF,
    DIM_LOCATION,
    DIM_DESIGN,
    DIM_CURRENCY,
    DIM_COUNTERPARTY,
    DIM_PAYMENT_TYPE,
    DIM_TRANSACTION,
)
WAREHOUSE_TABLES: Mapping[str, WarehouseTable] = {
    t.name: t for t in (*FACTS, DIM_DATE, *SOURCE_DIMENSIONS)
}
FACT_BY_SOURCE: Mapping[str, WarehouseTable] = {t.fact_of: t for t in FACTS if t.fact_of}

# Which dimension each fact column points at (the foreign keys a test checks).
FOREIGN_KEYS: Mapping[str, Mapping[str, str]] = {
    "fact_sales_order": {
        "created_date": "dim_date",
        "last_updated_date": "dim_date",
        "sales_staff_id": "dim_staff",
        "counterparty_id": "dim_counterparty",
        "currency_id": "dim_currency",
        "design_id": "dim_design",
        "agreed_payment_date": "dim_date",
        "agreed_delivery_date": "dim_date",
        "agreed_delivery_location_id": "dim_location",
    },
    "fact_purchase_order": {
        "created_date": "dim_date",
        "last_updated_date": "dim_date",
        "staff_id": "dim_staff",
        "counterparty_id": "dim_counterparty",
        "currency_id": "dim_currency",
        "agreed_delivery_date": "dim_date",
        "agreed_payment_date": "dim_date",
        "agreed_delivery_location_id": "dim_location",
    },
    "fact_payment": {
        "created_date": "dim_date",
        "last_updated_date": "dim_date",
        "transaction_id": "dim_transaction",
        "counterparty_id": "dim_counterparty",
        "currency_id": "dim_currency",
        "payment_type_id": "dim_payment_type",
        "payment_date": "dim_date",
    },
}


def dimensions_of(source_table: str) -> tuple[WarehouseTable, ...]:
    """The source dimensions a change to `source_table` changes (joins included)."""
    return tuple(d for d in SOURCE_DIMENSIONS if source_table in d.sources)


# ---- facts ---------------------------------------------------------------------------------


def record_id(source_table: str, row: RowModel) -> int:
    """A version's stable id: the first 63 bits of sha256(table + canonical row text)."""
    text = f"{source_table}\n{row_json(get_table(source_table), row)}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _stamps(row: RowModel) -> Row:
    return {
        "created_date": row.created_at.date(),
        "created_time": row.created_at.time(),
        "last_updated_date": row.last_updated.date(),
        "last_updated_time": row.last_updated.time(),
    }


def _day(text: str) -> date:
    return date.fromisoformat(text)


def sales_fact(row: schemas.SalesOrder) -> Row:
    return {
        "sales_record_id": record_id("sales_order", row),
        "sales_order_id": row.sales_order_id,
        **_stamps(row),
        "sales_staff_id": row.staff_id,
        "counterparty_id": row.counterparty_id,
        "units_sold": row.units_sold,
        "unit_price": money(row.unit_price),
        "currency_id": row.currency_id,
        "design_id": row.design_id,
        "agreed_payment_date": _day(row.agreed_payment_date),
        "agreed_delivery_date": _day(row.agreed_delivery_date),
        "agreed_delivery_location_id": row.agreed_delivery_location_id,
    }


def purchase_fact(row: schemas.PurchaseOrder) -> Row:
    return {
        "purchase_record_id": record_id("purchase_order", row),
        "purchase_order_id": row.purchase_order_id,
        **_stamps(row),
        "staff_id": row.staff_id,
        "counterparty_id": row.counterparty_id,
        "item_code": row.item_code,
        "item_quantity": row.item_quantity,
        "item_unit_price": money(row.item_unit_price),
        "currency_id": row.currency_id,
        "agreed_delivery_date": _day(row.agreed_delivery_date),
        "agreed_payment_date": _day(row.agreed_payment_date),
        "agreed_delivery_location_id": row.agreed_delivery_location_id,
    }


def payment_fact(row: schemas.Payment) -> Row:
    return {
        "payment_record_id": record_id("payment", row),
        "payment_id": row.payment_id,
        **_stamps(row),
        "transaction_id": row.transaction_id,
        "counterparty_id": row.counterparty_id,
        "payment_amount": money(row.payment_amount),
        "currency_id": row.currency_id,
        "payment_type_id": row.payment_type_id,
        "paid": row.paid,
        "payment_date": _day(row.payment_date),
    }


_FACT_BUILDERS: Mapping[str, Callable[[Any], Row]] = {
    "sales_order": sales_fact,
    "purchase_order": purchase_fact,
    "payment": payment_fact,
}


def fact_rows(source_table: str, versions: Iterable[RowModel]) -> list[Row]:
    """One fact row per version (duplicates of one version collapse into one row)."""
    build = _FACT_BUILDERS[source_table]
    table = FACT_BY_SOURCE[source_table]
    unique = {}
    for version in versions:
        row = build(version)
        unique[row[table.key]] = row
    return sort_rows(table, unique.values())


def sort_rows(table: WarehouseTable, rows: Iterable[Row]) -> list[Row]:
    """The one row order of every output: facts by business id, then version time, then id."""
    if table.natural_key is None:
        return sorted(rows, key=lambda r: r[table.key])
    return sorted(
        rows,
        key=lambda r: (
            r[table.natural_key],  # type: ignore[index]
            r["last_updated_date"],
            r["last_updated_time"],
            r[table.key],
        ),
    )


class MoneyPrecisionError(ValueError):
    """An amount with more than two decimal places: numeric(10,2) would round it."""


CENT = Decimal("0.01")


def money(value: Decimal) -> Decimal:
    quantized = value.quantize(CENT)
    if quantized != value:
        raise MoneyPrecisionError(f"amount {value} has more than two decimal places")
    return quantized


def partition_month(row: Row) -> str:
    """The fact partition of a row: the month of its created_date (`2022-11`)."""
    created: date = row["created_date"]
    return f"{created.year:04d}-{created.month:02d}"


# ---- dimensions ----------------------------------------------------------------------------

# Names for the currency codes the source holds (not in the source itself).
CURRENCY_NAMES: Mapping[str, str] = {
    "GBP": "British Pound Sterling",
    "USD": "United States Dollar",
    "EUR": "Euro",
    "JPY": "Japanese Yen",
    "CHF": "Swiss Franc",
    "CAD": "Canadian Dollar",
    "AUD": "Australian Dollar",
    "CNY": "Chinese Yuan",
}
# A NOT NULL dimension column whose source is null, or whose joined row is not there yet (the
# other table's event will rebuild the row).
UNKNOWN = "Unknown"


def _by_key(rows: Iterable[RowModel], key: str) -> dict[int, Any]:
    return {getattr(r, key): r for r in rows}


def dim_staff(
    staff: Sequence[schemas.Staff], departments: Sequence[schemas.Department]
) -> list[Row]:
    by_id = _by_key(departments, "department_id")
    out = []
    for s in staff:
        dept = by_id.get(s.department_id)
        out.append(
            {
                "staff_id": s.staff_id,
                "first_name": s.first_name,
                "last_name": s.last_name,
                "department_name": dept.department_name if dept else UNKNOWN,
                "location": (dept.location if dept else None) or UNKNOWN,
                "email_address": s.email_address,
            }
        )
    return sort_rows(DIM_STAFF, out)


def _location(a: schemas.Address) -> Row:
    return {
        "location_id": a.address_id,
        "address_line_1": a.address_line_1,
        "address_line_2": a.address_line_2,
        "district": a.district,
        "city": a.city,
        "postal_code": a.postal_code,
        "country": a.country,
        "phone": a.phone,
    }


def dim_location(addresses: Sequence[schemas.Address]) -> list[Row]:
    return sort_rows(DIM_LOCATION, (_location(a) for a in addresses))


def dim_design(designs: Sequence[schemas.Design]) -> list[Row]:
    return sort_rows(
        DIM_DESIGN,
        (
            {
                "design_id": d.design_id,
                "design_name": d.design_name,
                "file_location": d.file_location,
                "file_name": d.file_name,
            }
            for d in designs
        ),
    )


def dim_currency(currencies: Sequence[schemas.Currency]) -> list[Row]:
    return sort_rows(
        DIM_CURRENCY,
        (
            {
                "currency_id": c.currency_id,
                "currency_code": c.currency_code,
                "currency_name": CURRENCY_NAMES.get(c.currency_code.upper(), UNKNOWN),
            }
            for c in currencies
        ),
    )


def dim_counterparty(
    counterparties: Sequence[schemas.Counterparty], addresses: Sequence[schemas.Address]
) -> list[Row]:
    by_id = _by_key(addresses, "address_id")
    out = []
    for c in counterparties:
        a = by_id.get(c.legal_address_id)
        out.append(
            {
                "counterparty_id": c.counterparty_id,
                "counterparty_legal_name": c.counterparty_legal_name,
                "counterparty_legal_address_line_1": a.address_line_1 if a else UNKNOWN,
                "counterparty_legal_address_line_2": a.address_line_2 if a else None,
                "counterparty_legal_district": a.district if a else None,
                "counterparty_legal_city": a.city if a else UNKNOWN,
                "counterparty_legal_postal_code": a.postal_code if a else UNKNOWN,
                "counterparty_legal_country": a.country if a else UNKNOWN,
                "counterparty_legal_phone_number": a.phone if a else UNKNOWN,
            }
        )
    return sort_rows(DIM_COUNTERPARTY, out)


def dim_payment_type(types: Sequence[schemas.PaymentType]) -> list[Row]:
    return sort_rows(
        DIM_PAYMENT_TYPE,
        (
            {"payment_type_id": t.payment_type_id, "payment_type_name": t.payment_type_name}
            for t in types
        ),
    )


def dim_transaction(transactions: Sequence[schemas.Transaction]) -> list[Row]:
    return sort_rows(
        DIM_TRANSACTION,
        (
            {
                "transaction_id": t.transaction_id,
                "transaction_type": t.transaction_type,
                "sales_order_id": t.sales_order_id,
                "purchase_order_id": t.purchase_order_id,
            }
            for t in transactions
        ),
    )


# dimension -> (builder, the source tables it reads, in the builder's argument order)
DIMENSION_BUILDERS: Mapping[str, Callable[..., list[Row]]] = {
    "dim_staff": dim_staff,
    "dim_location": dim_location,
    "dim_design": dim_design,
    "dim_currency": dim_currency,
    "dim_counterparty": dim_counterparty,
    "dim_payment_type": dim_payment_type,
    "dim_transaction": dim_transaction,
}


@dataclass(frozen=True)
class Deleted:
    """A deleted source row: its last version and when the delete committed."""

    row: RowModel
    at: datetime


def build_dimension(
    table: WarehouseTable,
    latest: Mapping[str, Sequence[RowModel]],
    deleted: Mapping[str, Mapping[int, Deleted]] | None = None,
) -> list[Row]:
    """A source dimension from the current rows of its source tables, plus the last rows of
    deleted members (and joined rows), flagged with when their delete committed."""
    gone = deleted or {}
    inputs = [[*latest[s], *(d.row for d in gone.get(s, {}).values())] for s in table.sources]
    members = gone.get(table.sources[0], {})
    return [
        _flagged(row, members.get(row[table.key]))
        for row in DIMENSION_BUILDERS[table.name](*inputs)
    ]


def _flagged(row: Row, deleted: Deleted | None) -> Row:
    at = deleted.at if deleted is not None else None
    return {
        **row,
        "deleted_date": at.date() if at else None,
        "deleted_time": at.time() if at else None,
    }


def fact_dates(rows: Iterable[Row], table: WarehouseTable) -> set[date]:
    return {r[c] for r in rows for c in table.date_columns}


# Fixed English names (the calendar module's follow the process locale).
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def dim_date(first: date, last: date) -> list[Row]:
    """A calendar of every day from `first` to `last` (day_of_week: Monday = 0, as peers do)."""
    out = []
    day = first
    while day <= last:
        out.append(
            {
                "date_id": day,
                "year": day.year,
                "month": day.month,
                "day": day.day,
                "day_of_week": day.weekday(),
                "day_name": DAY_NAMES[day.weekday()],
                "month_name": MONTH_NAMES[day.month - 1],
                "quarter": (day.month - 1) // 3 + 1,
            }
        )
        day += timedelta(days=1)
    return out
