"""Access to the real totesys snapshots in `../shared/data/totesys_real` (CI has them).

Tests that use them skip cleanly where the folder is absent.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.rows import decode_rows

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "totesys_real"
JSONL_2024_11_14 = REAL_DATA / "greenseahawk_2024-11-14"
PARQUET_2024_11_15 = REAL_DATA / "aidan-mooney_2024-11-15" / "source_tables"
DESIGN_2025_06 = REAL_DATA / "nahisah_2025-06" / "design-20250605T134756Z.json"

MONEY_COLUMNS = {"unit_price", "item_unit_price", "payment_amount"}


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real snapshot not available: {path}")
    return path


def read_jsonl(table: str) -> list[Any]:
    path = require(JSONL_2024_11_14 / f"{table}.json")
    return decode_rows(path.read_bytes(), str(path), allow_json_lines=True)


def read_parquet(table: str) -> list[dict[str, Any]]:
    """Rows of the 2024-11-15 Parquet dump, turned back into what pg8000 would return.

    pandas wrote money as float64 and nullable ids as float64 with NaN; the shortest repr of
    each float is the exact text the database held (two decimal places at most).
    """
    import pyarrow.parquet as pq

    path = require(PARQUET_2024_11_15 / f"{table}.parquet")
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return [{col: _from_parquet(col, value) for col, value in row.items()} for row in rows]


def _from_parquet(column: str, value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if column in MONEY_COLUMNS:
            return Decimal(repr(value))
        if value.is_integer():
            return int(value)
    if hasattr(value, "to_pydatetime"):
        converted: datetime = value.to_pydatetime()
        return converted
    return value
