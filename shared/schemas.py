"""Pydantic row schemas of the totesys tables (`reference/totesys_schema.md`).

Types follow the source exactly: NOT NULL columns are required and non-null, nullable columns
are `X | None` and must still be present (a missing column is drift, not a null). Unknown
columns are refused so a source that grows a column is noticed instead of silently dropped.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.types import DateText, Money, Timestamp


class RowModel(BaseModel):
    """Base of every row schema: strict types, no unknown columns, immutable rows."""

    # defer_build: a Lambda validates one table; the others' schemas are never built (cold start)
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    created_at: Timestamp
    last_updated: Timestamp


class Address(RowModel):
    address_id: int
    address_line_1: str
    address_line_2: str | None
    district: str | None
    city: str
    postal_code: str
    country: str
    phone: str


class Counterparty(RowModel):
    counterparty_id: int
    counterparty_legal_name: str
    legal_address_id: int
    commercial_contact: str | None
    delivery_contact: str | None


class Currency(RowModel):
    currency_id: int
    currency_code: str


class Department(RowModel):
    department_id: int
    department_name: str
    location: str | None
    manager: str | None


class Design(RowModel):
    design_id: int
    design_name: str
    file_location: str
    file_name: str


class Staff(RowModel):
    staff_id: int
    first_name: str
    last_name: str
    department_id: int
    email_address: str


class SalesOrder(RowModel):
    sales_order_id: int
    design_id: int
    staff_id: int
    counterparty_id: int
    units_sold: int
    unit_price: Money
    currency_id: int
    agreed_delivery_date: DateText
    agreed_payment_date: DateText
    agreed_delivery_location_id: int


class PurchaseOrder(RowModel):
    purchase_order_id: int
    staff_id: int
    counterparty_id: int
    item_code: str
    item_quantity: int
    item_unit_price: Money
    currency_id: int
    agreed_delivery_date: DateText
    agreed_payment_date: DateText
    agreed_delivery_location_id: int


class PaymentType(RowModel):
    payment_type_id: int
    payment_type_name: str


class Payment(RowModel):
    payment_id: int
    transaction_id: int
    counterparty_id: int
    payment_amount: Money
    currency_id: int
    payment_type_id: int
    paid: bool
    payment_date: DateText
    company_ac_number: int
    counterparty_ac_number: int


class Transaction(RowModel):
    transaction_id: int
    transaction_type: str
    sales_order_id: int | None
    purchase_order_id: int | None
