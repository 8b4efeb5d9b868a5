"""Warehouse rows to and from Parquet bytes, deterministically.

The same rows in the same order always give the same bytes (one row group, fixed compression,
no pandas metadata, no timestamps of the write), so a rebuild and an incremental pass can be
compared byte for byte and an unchanged file is never rewritten.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from services.transform.warehouse import Kind, Row, WarehouseTable

_ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.INT: pa.int32(),
    Kind.RECORD_ID: pa.int64(),
    Kind.TEXT: pa.string(),
    Kind.DATE: pa.date32(),
    Kind.TIME: pa.time64("us"),
    Kind.MONEY: pa.decimal128(12, 2),
    Kind.BOOL: pa.bool_(),
    Kind.BIGINT: pa.int64(),
    Kind.TIMESTAMP: pa.timestamp("us"),
}


def arrow_schema(table: WarehouseTable) -> pa.Schema:
    return pa.schema(
        [pa.field(c.name, _ARROW_TYPES[c.kind], nullable=c.nullable) for c in table.columns]
    )


def encode(table: WarehouseTable, rows: Sequence[Row]) -> bytes:
    arrow = pa.Table.from_pylist(list(rows), schema=arrow_schema(table))
    sink = io.BytesIO()
    pq.write_table(
        arrow,
        sink,
        compression="zstd",
        row_group_size=max(1, len(rows)),
        use_dictionary=True,
        write_statistics=True,
    )
    return sink.getvalue()


def decode(table: WarehouseTable, data: bytes) -> list[Row]:
    arrow = pq.read_table(io.BytesIO(data), schema=arrow_schema(table))
    rows: list[Row] = arrow.to_pylist()
    return rows
