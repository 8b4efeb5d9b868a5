"""The merge Lambda's cold start builds no Pydantic schema it may never use (issue #9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: in this one, other tests have long since built every schema.
_PROBE = """
import json
import services.merge.handler
from shared import events, quarantine
from shared.tables import TABLES
print(json.dumps({
    "rows": {name: spec.row_model.__pydantic_complete__ for name, spec in TABLES.items()},
    "events": {
        cls.__name__: cls.__pydantic_complete__
        for cls in (events.HistoryAppended, events.RowsMissingAtSource, events.IngestPaused)
    },
    # only a rejected file needs its report
    "rejections": {"QuarantineReport": quarantine.QuarantineReport.__pydantic_complete__},
}))
"""


def _built_after_import() -> dict[str, dict[str, bool]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, check=True, capture_output=True, text=True
    )
    found: dict[str, dict[str, bool]] = json.loads(done.stdout)
    return found


def test_importing_the_merge_handler_builds_no_row_event_or_report_schema():
    built = _built_after_import()
    assert len(built["rows"]) == 11
    assert not any(built["rows"].values()), built["rows"]
    assert not any(built["events"].values()), built["events"]
    assert not any(built["rejections"].values()), built["rejections"]


def test_a_deferred_row_model_builds_on_first_use_and_still_refuses_bad_rows():
    from shared.rows import validate_rows
    from shared.tables import get_table

    spec = get_table("currency")
    good = {
        "currency_id": 1,
        "currency_code": "GBP",
        "created_at": "2022-11-03T14:20:49.962000",
        "last_updated": "2022-11-03T14:20:49.962000",
    }
    report = validate_rows(spec, [good, {**good, "currency_id": "1", "extra": 2}], "f.json")
    assert [row.currency_id for row in report.rows] == [1]  # type: ignore[attr-defined]
    assert {problem.field for problem in report.problems} == {"currency_id", "extra"}
    assert spec.row_model.__pydantic_complete__


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_merge_handler_imports_with_the_collector_paused_and_freezes_what_it_made():
    found = _run(
        "import gc, json; import services.merge.handler; "
        "print(json.dumps([gc.isenabled(), gc.get_freeze_count()]))"
    )
    enabled, frozen = json.loads(found)
    assert enabled  # the collector runs again for the invocations
    assert frozen > 10_000  # boto3's, Pydantic's and Powertools' objects are never walked again


def test_long_lived_imports_leaves_a_paused_collector_paused():
    found = _run(
        "import gc; from shared.coldstart import long_lived_imports; gc.disable()\n"
        "with long_lived_imports():\n    assert not gc.isenabled()\n"
        "print(gc.isenabled())"
    )
    assert found == "False"
