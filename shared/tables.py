"""The table registry: the one place that says which tables the pipeline knows.

Everything else (merge routing, infra, the local runtime, ingest SQL, status) is derived
from `TABLES`. To add a table: write its row model in `shared/schemas.py` and add one
`TableSpec` line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from shared import schemas
from shared.schemas import RowModel

# A table kept as one `latest/<table>.json` moves to key-range partitions of
# AUTO_PARTITION_ROWS keys with the first change after the file passes AUTO_PARTITION_BYTES:
# every merge reads and rewrites the whole file, so its size is what a merge costs (bytes,
# not rows: rows differ in width from table to table). At 16 MiB a merge moves at most
# 32 MiB; a partition of 10,000 sales_order rows is about 3 MB.
AUTO_PARTITION_BYTES = 16 * 2**20
AUTO_PARTITION_ROWS = 10_000


@dataclass(frozen=True)
class TableSpec:
    """What the pipeline needs to know about one source table."""

    name: str
    primary_key: str
    row_model: type[RowModel]
    # Full re-read compared with latest on every ingest run, to catch rows edited without a
    # new `last_updated` (the real `design.file_location` drift). Cheap for small tables.
    reconcile: bool = False
    # Rows per key-range partition of latest; None keeps one `latest/<table>.json` until it
    # passes `partition_after_bytes` (None: one file for good). A partitioned table stays so.
    rows_per_partition: int | None = None
    partition_after_bytes: int | None = AUTO_PARTITION_BYTES
    # How the ingest captures changes: "poll" (rows with a newer `last_updated`) or "log" (every
    # committed change from a logical replication slot: each version and every delete; needs
    # logical decoding on the database, README "Capture modes"). A deployment may turn log
    # mode on for more tables with LOG_CAPTURE_TABLES (services/ingest/settings.py).
    capture: Literal["poll", "log"] = "poll"
    # Polling: stage a key gone from the source as a delete (Fivetran's "inferred delete");
    # None: on where the table is reconciled (the only polled tables whose deletes are seen).
    infer_deletes: bool | None = None
    # A column the source gained (a row holding a column the model does not name): "stop"
    # quarantines the batch, the table waits for a registry change and a redrive; "add_nullable"
    # lets it join the table's model as nullable (shared/schema_state.py), rows from before it
    # reading null. Either way the drift is named in an event (SchemaDrift).
    schema_policy: Literal["stop", "add_nullable"] = "stop"

    @property
    def infers_deletes(self) -> bool:
        return self.reconcile if self.infer_deletes is None else self.infer_deletes

    def __post_init__(self) -> None:
        fields = self.row_model.model_fields
        if self.primary_key not in fields:
            raise ValueError(f"{self.name}: primary key {self.primary_key!r} is not a column")
        if "last_updated" not in fields:
            raise ValueError(f"{self.name}: the merge needs a last_updated column")

    @property
    def columns(self) -> tuple[str, ...]:
        """Column order of the canonical form: the primary key first, then as declared."""
        rest = (name for name in self.row_model.model_fields if name != self.primary_key)
        return (self.primary_key, *rest)


_FACT = AUTO_PARTITION_ROWS

_SPECS = (
    TableSpec("address", "address_id", schemas.Address, reconcile=True),
    TableSpec("counterparty", "counterparty_id", schemas.Counterparty, reconcile=True),
    TableSpec("currency", "currency_id", schemas.Currency, reconcile=True),
    TableSpec("department", "department_id", schemas.Department, reconcile=True),
    TableSpec("design", "design_id", schemas.Design, reconcile=True),
    TableSpec("staff", "staff_id", schemas.Staff, reconcile=True),
    # the fact tables grow without end: partitioned from the start
    TableSpec("sales_order", "sales_order_id", schemas.SalesOrder, rows_per_partition=_FACT),
    TableSpec("payment", "payment_id", schemas.Payment, rows_per_partition=_FACT),
    TableSpec("payment_type", "payment_type_id", schemas.PaymentType, reconcile=True),
    TableSpec(
        "purchase_order", "purchase_order_id", schemas.PurchaseOrder, rows_per_partition=_FACT
    ),
    TableSpec("transaction", "transaction_id", schemas.Transaction, rows_per_partition=_FACT),
)

TABLES: Mapping[str, TableSpec] = {spec.name: spec for spec in _SPECS}


class UnknownTableError(KeyError):
    """A table name the registry does not hold."""

    def __str__(self) -> str:
        return f"unknown table {self.args[0]!r}; known: {', '.join(sorted(TABLES))}"


def get_table(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise UnknownTableError(name) from None
