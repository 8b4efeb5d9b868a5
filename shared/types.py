"""Column types shared by every row schema.

The source is PostgreSQL read with pg8000 (naive datetimes, Decimal money, varchar dates); the
files in the bucket are JSON. These types accept both and give one canonical form back.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer

_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?$", re.ASCII)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)

# The warehouse's integer range (signed 64-bit, Postgres bigint / Parquet int64): every int
# column, primary keys included, is refused outside it rather than failing a later load.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Money's largest and smallest magnitude, as Decimal.adjusted() (the power of ten of its first
# digit): |adjusted| <= 100. A Decimal such as 1E+999999999 is finite and tiny to send, but its
# plain text (the canonical form never uses an exponent) is a gigabyte of zeros. Within the bound
# the text is at most the number's own digits plus ~100 zeros, so formatting never amplifies an
# input. 100 is far beyond any amount (the warehouse keeps decimal(12,2); the source's numeric
# allows more, so the bound is not the warehouse's) and still leaves room for odd source data.
MONEY_MAX_ADJUSTED = 100


def parse_timestamp(value: Any) -> datetime:
    """A naive timestamp: `2022-11-03T14:20:51.563000`, `2022-11-03 14:20:51.563`, no fraction."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("timestamp must be naive (the source column has no time zone)")
        if type(value) is not datetime:  # a subclass: row_json writes exact datetimes only
            return datetime.fromisoformat(value.isoformat(timespec="microseconds"))
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
        result = Decimal(value)
    elif isinstance(value, Decimal):
        result = value if type(value) is Decimal else Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError("money must be a decimal number") from None
    else:
        raise ValueError(f"money must be a decimal number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("money must be a finite number")
    if abs(result.adjusted()) > MONEY_MAX_ADJUSTED:  # zero too: 0E-999999999 is a long text
        raise ValueError(
            f"money out of range: its first digit must be within 1E-{MONEY_MAX_ADJUSTED} .. "
            f"1E+{MONEY_MAX_ADJUSTED} (this one's is at 1E{result.adjusted():+d})"
        )
    return result


def check_text(value: str) -> str:
    """Text that can be written as UTF-8: JSON's `"\\ud800"` decodes to a lone surrogate, which
    every string type accepts and every UTF-8 writer refuses."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"text is not valid Unicode: a lone surrogate ({value[exc.start]!r} at position "
                f"{exc.start}) cannot be written as UTF-8"
            ) from None
    return value


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
Text = Annotated[str, AfterValidator(check_text)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Money = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    PlainSerializer(format_money, return_type=str, when_used="json"),
]
