"""Pydantic row schemas of the totesys tables (`reference/totesys_schema.md`).

Types follow the source exactly: NOT NULL columns are required and non-null, nullable columns
are `X | None` and must still be present (a missing column is drift, not a null). Unknown
columns are refused so a source that grows a column is noticed instead of silently dropped.
Every integer column is `Int64` (the warehouse's range) and every text column `Text` (writable
as UTF-8): a row the schema accepts is one the canonical writer can write.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.types import DateText, Int64, Money, Text, Timestamp


class RowModel(BaseModel):
    """Base of every row schema: strict types, no unknown columns, immutable rows."""

    # defer_build: a Lambda validates one table; the others' schemas are never built (cold start)
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    created_at: Timestamp
    last_updated: Timestamp


class Address(RowModel):
    address_id: Int64
    address_line_1: Text
    address_line_2: Text | None
    district: Text | None
    city: Text
    postal_code: Text
    country: Text
    phone: Text


class Counterparty(RowModel):
    counterparty_id: Int64
    counterparty_legal_name: Text
    legal_address_id: Int64
    commercial_contact: Text | None
    delivery_contact: Text | None


class Currency(RowModel):
    currency_id: Int64
    currency_code: Text


class Department(RowModel):
    department_id: Int64
    department_name: Text
    location: Text | None
    manager: Text | None


class Design(RowModel):
    design_id: Int64
    design_name: Text
    file_location: Text
    file_name: Text


class Staff(RowModel):
    staff_id: Int64
    first_name: Text
    last_name: Text
    department_id: Int64
    email_address: Text


class SalesOrder(RowModel):
    sales_order_id: Int64
    design_id: Int64
    staff_id: Int64
    counterparty_id: Int64
    units_sold: Int64
    unit_price: Money
    currency_id: Int64
    agreed_delivery_date: DateText
    agreed_payment_date: DateText
    agreed_delivery_location_id: Int64


class PurchaseOrder(RowModel):
    purchase_order_id: Int64
    staff_id: Int64
    counterparty_id: Int64
    item_code: Text
    item_quantity: Int64
    item_unit_price: Money
    currency_id: Int64
    agreed_delivery_date: DateText
    agreed_payment_date: DateText
    agreed_delivery_location_id: Int64


class PaymentType(RowModel):
    payment_type_id: Int64
    payment_type_name: Text


class Payment(RowModel):
    payment_id: Int64
    transaction_id: Int64
    counterparty_id: Int64
    payment_amount: Money
    currency_id: Int64
    payment_type_id: Int64
    paid: bool
    payment_date: DateText
    company_ac_number: Int64
    counterparty_ac_number: Int64


class Transaction(RowModel):
    transaction_id: Int64
    transaction_type: Text
    sales_order_id: Int64 | None
    purchase_order_id: Int64 | None
