"""End to end on one machine: PostgreSQL → ingest → staging → merge → latest equals the source.

`ingestctl local up --source ... --ingest-every 2` runs the ingest function on the schedule,
the dispatcher hands every upload to the merge; nothing in between is simulated.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from shared.reader import read_latest
from shared.rows import row_json, validate_rows
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.e2e.local_up import LocalUp, merge_handler_missing
from tests.integration.ingest.conftest import SourceDb
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.xdist_group("postgres"),
    pytest.mark.e2e,
    pytest.mark.skipif(merge_handler_missing(), reason="merge handler not in this checkout"),
]

BUCKET = "ingest-local"


def _latest_matches_source(store: BucketStore, source_db: SourceDb) -> Callable[[], bool]:
    def check() -> bool:
        for name, spec in TABLES.items():
            expected = [
                row_json(spec, r) for r in validate_rows(spec, source_db.rows(name), name).rows
            ]
            latest = read_latest(store, spec)
            if [row_json(spec, r) for r in latest.rows] != expected:
                return False
        return True

    return check


def test_the_scheduled_ingest_keeps_latest_equal_to_the_source(source_db, tmp_path):
    url = source_db.server.url(source_db.name)
    up = LocalUp(tmp_path / "logs", "--source", url, "--ingest-every", "2")
    try:
        up.wait_line(r"^ready endpoint=", timeout=90)
        store = BucketStore(BUCKET, up.client("s3"))
        up.wait_line(r"^ingest ok ", timeout=60)
        wait_until(
            _latest_matches_source(store, source_db),
            "baselines merged into latest",
            timeout=60,
            every=0.5,
        )

        # An update (a payment is paid) and an insert, as the business would make them.
        payment = source_db.rows("payment")[0]
        source_db.update(
            "payment",
            payment["payment_id"],
            paid=not payment["paid"],
            last_updated=source_db.max_last_updated("payment") + timedelta(seconds=1),
        )
        currency = source_db.rows("currency")[-1]
        source_db.insert(
            "currency",
            {**currency, "currency_id": currency["currency_id"] + 100, "currency_code": "JPY"},
        )
        wait_until(
            _latest_matches_source(store, source_db),
            "the changes merged into latest",
            timeout=60,
            every=0.5,
        )
        history = list(store.keys("history/payment/"))
        assert history, "the replaced payment version went to history"
    finally:
        code = up.stop()
    assert code == 0, up.stderr
