"""The quarantine's on-bucket contract: a rejected file's copy, its report and its record.

`quarantine/<t>/<t>_<stamp>_<batch>.json` is the rejected bytes, `....report.json` says why row
by row, and `_state/merge/<t>/quarantined/<batch>.json` (a `QuarantineRecord`) lets a redriven
message, whose staging version is gone, find the copy and the batch's observation. Written by
the merge; read by the merge (redrive), `ingestctl status` and `dismiss`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.commitlog import SourceRef
from shared.layout import state_key
from shared.rows import RowProblem

REPORT_SUFFIX = ".report.json"


def quarantine_record_key(table: str, batch: str) -> str:
    return state_key("merge", table, "quarantined", f"{batch}.json")


def report_key_of(copy_key: str) -> str:
    return copy_key.removesuffix(".json") + REPORT_SUFFIX


class QuarantineReport(BaseModel):
    """Why a staging file was rejected, row by row."""

    model_config = ConfigDict(defer_build=True)  # only rejected files need it

    table: str
    batch: str
    source_key: str
    source_version: str | None
    quarantine_key: str
    reason: str
    problems: list[RowProblem]
    # columns the rows hold that the table's model does not name (schema drift), first seen
    # first; the table's policy stopped the batch (shared.tables.TableSpec.schema_policy)
    drift: list[str] = []


class QuarantineRecord(BaseModel):
    """A rejected batch: where its bytes went, and the source version it was read from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    batch: str
    source: SourceRef
    quarantine_key: str
    report_key: str
    reason: str
    problems: int
