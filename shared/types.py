"""Column types shared by every row schema.

The source is PostgreSQL read with pg8000 (naive datetimes, Decimal money, varchar dates); the
files in the bucket are JSON. These types accept both and give one canonical form back.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_timestamp(value: Any) -> datetime:
    """A naive timestamp: `2022-11-03T14:20:51.563000`, `2022-11-03 14:20:51.563`, no fraction."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("timestamp must be naive (the source column has no time zone)")
        return value
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be a string, got {type(value).__name__}")
    if not _TIMESTAMP_RE.match(value):
        raise ValueError("timestamp must look like YYYY-MM-DDTHH:MM:SS[.ffffff]")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"timestamp is not a real time: {exc}") from None


def format_timestamp(value: datetime) -> str:
    """The canonical text of a timestamp: ISO 8601 with a `T` and always six fraction digits."""
    return value.isoformat(timespec="microseconds")


def parse_date_text(value: Any) -> str:
    """A `YYYY-MM-DD` date kept as text, as the source stores it (varchar), but checked."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"date must be a YYYY-MM-DD string, got {type(value).__name__}")
    if not _DATE_RE.match(value):
        raise ValueError("date must look like YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"date is not a real day: {exc}") from None
    return value


def parse_money(value: Any) -> Decimal:
    """Exact decimal money. A binary float is refused: its exact text is already lost."""
    if isinstance(value, bool):
        raise ValueError("money must be a decimal number, got a boolean")
    if isinstance(value, float):
        raise ValueError(
            "money must not arrive as a binary float; read JSON with Decimal for numbers"
        )
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError("money must be a decimal number") from None
    else:
        raise ValueError(f"money must be a decimal number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("money must be a finite number")
    return result


def format_money(value: Decimal) -> str:
    """The canonical text of an amount: plain notation, no trailing zeros (3.90 -> 3.9)."""
    # A context as wide as the number itself: normalize() must never round (28 digits default).
    normal = value.normalize(Context(prec=max(1, len(value.as_tuple().digits))))
    text = format(normal, "f")
    return "0" if text in ("-0", "0") else text


Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]
DateText = Annotated[str, BeforeValidator(parse_date_text)]
Money = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    PlainSerializer(format_money, return_type=str, when_used="json"),
]
