"""A deterministic generator of totesys-shaped sample data for the demo and the tests.

It follows how the real database behaves (`reference/totesys_schema.md`): dimension rows are
created once; every sale or purchase inserts an order, a transaction and a payment with the same
`created_at`; payments are later updated when `paid` flips to true. Nothing here is copied
from the real snapshots; the values are made up from a seeded random generator.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.tables import TABLES

Row = dict[str, Any]

_CITIES = ["Manchester", "Leeds", "Bristol", "Glasgow", "Cardiff", "Lisbon", "Boston", "Lyon"]
_COUNTRIES = ["United Kingdom", "Portugal", "United States", "France", "Ireland", "Canada"]
_STREETS = ["Station Road", "High Street", "Mill Lane", "Church Street", "Park Avenue"]
_FIRST = ["Jeremie", "Deron", "Jeanette", "Ana", "Magdalena", "Korey", "Ethyl", "Imani", "Kai"]
_LAST = ["Franey", "Beier", "Erdman", "Glover", "Zieme", "Kreiger", "Bosco", "Walsh", "Moen"]
_COMPANIES = ["Fahey and Sons", "Leannon Inc", "Armstrong LLC", "Kohler Group", "Frami Ltd"]
_DEPARTMENTS = [
    ("Sales", "Manchester"),
    ("Purchasing", "Manchester"),
    ("Production", "Leeds"),
    ("Dispatch", "Leeds"),
    ("Finance", "Manchester"),
    ("Facilities", "Manchester"),
    ("Communications", "Leeds"),
    ("HR", "Leeds"),
]
_MATERIALS = ["Wooden", "Bronze", "Steel", "Granite", "Cotton", "Plastic", "Rubber", "Soft"]
_DIRS = ["/usr", "/private", "/lost+found", "/home/user/dir", "/usr/share", "/System"]


class SampleDatabase:
    """An in-memory totesys database that moves forward in 20-minute steps."""

    def __init__(
        self,
        seed: int = 0,
        *,
        start: datetime = datetime(2024, 11, 1, 9, 0),
        orders: int = 40,
        designs: int = 25,
    ) -> None:
        self.random = random.Random(seed)
        self.now = start
        self.tables: dict[str, dict[int, Row]] = {name: {} for name in TABLES}
        self._unpaid: list[int] = []
        self._build_dimensions(designs)
        for _ in range(orders):
            self._new_order()

    # -- reading -----------------------------------------------------------------------------
    def rows(self, table: str) -> list[Row]:
        """All rows of a table, in key order (copies, safe to change)."""
        return [dict(row) for _, row in sorted(self.tables[table].items())]

    def snapshot(self) -> dict[str, list[Row]]:
        return {name: self.rows(name) for name in self.tables}

    # -- moving forward ----------------------------------------------------------------------
    def advance(
        self, minutes: int = 20, *, sales: int = 3, purchases: int = 1, payments_paid: int = 2
    ) -> dict[str, list[Row]]:
        """Let `minutes` pass with some business; return the rows changed, per table."""
        changed: dict[str, dict[int, Row]] = {name: {} for name in self.tables}
        end = self.now + timedelta(minutes=minutes)
        for number in range(sales + purchases):
            self.now += timedelta(seconds=self.random.randint(1, max(1, minutes * 60 // 8)))
            self.now = min(self.now, end)
            kind = "SALE" if number < sales else "PURCHASE"
            for table, row in self._new_order(kind):
                changed[table][row[TABLES[table].primary_key]] = row
        for _ in range(min(payments_paid, len(self._unpaid))):
            payment_id = self._unpaid.pop(0)
            row = self.tables["payment"][payment_id]
            row["paid"] = True
            row["last_updated"] = self._tick(end)
            changed["payment"][payment_id] = row
        self.now = end
        return {name: [dict(r) for _, r in sorted(rows.items())] for name, rows in changed.items()}

    def _tick(self, end: datetime) -> datetime:
        self.now = min(end, self.now + timedelta(milliseconds=self.random.randint(1, 60_000)))
        return _ms(self.now)

    # -- building ----------------------------------------------------------------------------
    def _stamp(self) -> datetime:
        self.now += timedelta(milliseconds=self.random.randint(1, 900))
        return _ms(self.now)

    def _insert(self, table: str, row: Row) -> tuple[str, Row]:
        self.tables[table][row[TABLES[table].primary_key]] = row
        return table, row

    def _build_dimensions(self, designs: int) -> None:
        r = self.random
        for i in range(1, 31):
            ts = self._stamp()
            self._insert(
                "address",
                {
                    "address_id": i,
                    "address_line_1": f"{r.randint(1, 999)} {r.choice(_STREETS)}",
                    "address_line_2": r.choice([None, None, f"Flat {r.randint(1, 40)}"]),
                    "district": r.choice([None, "Avon", "Bedfordshire", "Cheshire"]),
                    "city": r.choice(_CITIES),
                    "postal_code": f"{r.randint(10000, 99999)}",
                    "country": r.choice(_COUNTRIES),
                    "phone": f"{r.randint(1000, 9999)} {r.randint(100000, 999999)}",
                    "created_at": ts,
                    "last_updated": ts,
                },
            )
        for i, (name, location) in enumerate(_DEPARTMENTS, start=1):
            ts = self._stamp()
            self._insert(
                "department",
                {
                    "department_id": i,
                    "department_name": name,
                    "location": location,
                    "manager": f"{r.choice(_FIRST)} {r.choice(_LAST)}",
                    "created_at": ts,
                    "last_updated": ts,
                },
            )
        for i in range(1, 21):
            first, last = r.choice(_FIRST), r.choice(_LAST)
            ts = self._stamp()
            self._insert(
                "staff",
                {
                    "staff_id": i,
                    "first_name": first,
                    "last_name": last,
                    "department_id": r.randint(1, len(_DEPARTMENTS)),
                    "email_address": f"{first.lower()}.{last.lower()}@terrifictotes.com",
                    "created_at": ts,
                    "last_updated": ts,
                },
            )
        for i in range(1, 21):
            ts = self._stamp()
            self._insert(
                "counterparty",
                {
                    "counterparty_id": i,
                    "counterparty_legal_name": f"{r.choice(_COMPANIES)} {i}",
                    "legal_address_id": r.randint(1, 30),
                    "commercial_contact": f"{r.choice(_FIRST)} {r.choice(_LAST)}",
                    "delivery_contact": r.choice([None, f"{r.choice(_FIRST)} {r.choice(_LAST)}"]),
                    "created_at": ts,
                    "last_updated": ts,
                },
            )
        for i, code in enumerate(["GBP", "USD", "EUR"], start=1):
            ts = self._stamp()
            self._insert(
                "currency",
                {"currency_id": i, "currency_code": code, "created_at": ts, "last_updated": ts},
            )
        for i, name in enumerate(
            ["SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND"], start=1
        ):
            ts = self._stamp()
            self._insert(
                "payment_type",
                {
                    "payment_type_id": i,
                    "payment_type_name": name,
                    "created_at": ts,
                    "last_updated": ts,
                },
            )
        for i in range(1, designs + 1):
            ts = self._stamp()
            material = r.choice(_MATERIALS)
            day = (self.now.date() - timedelta(days=r.randint(10, 400))).strftime("%Y%m%d")
            self._insert(
                "design",
                {
                    "design_id": i,
                    "design_name": material,
                    "file_location": r.choice(_DIRS),
                    "file_name": f"{material.lower()}-{day}-{_code(r, 4).lower()}.json",
                    "created_at": ts,
                    "last_updated": ts,
                },
            )

    def _new_order(self, kind: str | None = None) -> Iterator[tuple[str, Row]]:
        r = self.random
        kind = kind or r.choice(["SALE", "SALE", "PURCHASE"])
        ts = self._stamp()
        day = ts.date()
        delivery = _day(day + timedelta(days=r.randint(1, 7)))
        pay_day = _day(day + timedelta(days=r.randint(1, 7)))
        currency_id = r.randint(1, 3)
        counterparty_id = r.randint(1, 20)
        location_id = r.randint(1, 30)
        sale = kind == "SALE"
        order_table = "sales_order" if sale else "purchase_order"
        order_id = len(self.tables[order_table]) + 1
        changes = []
        if sale:
            units = r.randint(1000, 100000)
            price = Decimal(r.randint(200, 400)) / 100
            order: Row = {
                "sales_order_id": order_id,
                "created_at": ts,
                "last_updated": ts,
                "design_id": r.randint(1, len(self.tables["design"])),
                "staff_id": r.randint(1, 20),
                "counterparty_id": counterparty_id,
                "units_sold": units,
                "unit_price": price,
                "currency_id": currency_id,
                "agreed_delivery_date": delivery,
                "agreed_payment_date": pay_day,
                "agreed_delivery_location_id": location_id,
            }
            amount = price * units
        else:
            quantity = r.randint(1, 1000)
            price = Decimal(r.randint(300, 100000)) / 100
            order = {
                "purchase_order_id": order_id,
                "created_at": ts,
                "last_updated": ts,
                "staff_id": r.randint(1, 20),
                "counterparty_id": counterparty_id,
                "item_code": _code(r, 7),
                "item_quantity": quantity,
                "item_unit_price": price,
                "currency_id": currency_id,
                "agreed_delivery_date": delivery,
                "agreed_payment_date": pay_day,
                "agreed_delivery_location_id": location_id,
            }
            amount = price * quantity
        changes.append(self._insert(order_table, order))
        transaction_id = len(self.tables["transaction"]) + 1
        changes.append(
            self._insert(
                "transaction",
                {
                    "transaction_id": transaction_id,
                    "transaction_type": kind,
                    "sales_order_id": order_id if sale else None,
                    "purchase_order_id": None if sale else order_id,
                    "created_at": ts,
                    "last_updated": ts,
                },
            )
        )
        payment_id = len(self.tables["payment"]) + 1
        changes.append(
            self._insert(
                "payment",
                {
                    "payment_id": payment_id,
                    "created_at": ts,
                    "last_updated": ts,
                    "transaction_id": transaction_id,
                    "counterparty_id": counterparty_id,
                    "payment_amount": amount.quantize(Decimal("0.01")),
                    "currency_id": currency_id,
                    "payment_type_id": 1 if sale else 3,
                    "paid": False,
                    "payment_date": pay_day,
                    "company_ac_number": r.randint(10_000_000, 99_999_999),
                    "counterparty_ac_number": r.randint(10_000_000, 99_999_999),
                },
            )
        )
        self._unpaid.append(payment_id)
        return iter(changes)


def _ms(moment: datetime) -> datetime:
    """Millisecond precision, as the source stores timestamps."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _day(day: date) -> str:
    return day.isoformat()


def _code(r: random.Random, length: int) -> str:
    return "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(length))
