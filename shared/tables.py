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


@dataclass(frozen=True)
class TableSpec:
    """What the pipeline needs to know about one source table."""

    name: str
    primary_key: str
    row_model: type[RowModel]
    # Full re-read compared with latest on every ingest run, to catch rows edited without a
    # new `last_updated` (the real `design.file_location` drift). Cheap for small tables.
    reconcile: bool = False
    # Rows per key-range partition of latest; None keeps one `latest/<table>.json`.
    rows_per_partition: int | None = None
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


_SPECS = (
    TableSpec("address", "address_id", schemas.Address, reconcile=True),
    TableSpec("counterparty", "counterparty_id", schemas.Counterparty, reconcile=True),
    TableSpec("currency", "currency_id", schemas.Currency, reconcile=True),
    TableSpec("department", "department_id", schemas.Department, reconcile=True),
    TableSpec("design", "design_id", schemas.Design, reconcile=True),
    TableSpec("staff", "staff_id", schemas.Staff, reconcile=True),
    TableSpec("sales_order", "sales_order_id", schemas.SalesOrder),
    TableSpec("payment", "payment_id", schemas.Payment),
    TableSpec("payment_type", "payment_type_id", schemas.PaymentType, reconcile=True),
    TableSpec("purchase_order", "purchase_order_id", schemas.PurchaseOrder),
    TableSpec("transaction", "transaction_id", schemas.Transaction),
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
