"""The change tables agree with `ingestctl history` (issue 19): for every key of a generated
history, `changes_staff` holds exactly the versions `row_history` shows, with their validity,
operation and commit; whatever order the merge events reach the transform in, however often,
and with the transform dying part way through some of them. A rebuild writes the same bytes.

A history is polled files (plain rows) or log-mode files (`_op`/`_lsn`, deletes included),
merged in an order of their own (a file staged after another may hold earlier changes: its
observation or its commit positions say so).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from ops.inspection import row_history
from ops.local.moto_edge import aws_like_moto
from services.transform import handler as transform_handler
from services.transform.changes import CHANGE_TABLES, VERSION_COLUMNS
from services.transform.events import parse_message
from services.transform.service import SourceChange, TransformService
from shared.rows import dump_rows
from shared.schema_state import effective_spec
from shared.storage import BucketStore
from shared.tables import TABLES
from tests.integration.transform_interleavings import assert_rebuilds_to_the_same_bytes
from tests.integration.transform_pipeline import BUCKET, TransformChain
from tests.rows import T0, log_file, logged, staff

SPEC = TABLES["staff"]
TABLE = CHANGE_TABLES["staff"]
SOURCE_COLUMNS = [c.name for c in TABLE.columns if c not in VERSION_COLUMNS]
KEYS = (1, 2, 3)


class TransformDied(Exception):
    pass


class CrashAtWrite(BucketStore):
    """Dies before its `n`th write (a put or a delete): the transform's process ends there."""

    def __init__(self, n: int) -> None:
        super().__init__(BUCKET)
        self.left = n

    def _count(self) -> None:
        self.left -= 1
        if self.left == 0:
            raise TransformDied

    def put(self, key: str, data: bytes, **kwargs: Any) -> Any:
        self._count()
        return super().put(key, data, **kwargs)

    def delete_if_match(self, key: str, etag: str) -> Any:
        self._count()
        return super().delete_if_match(key, etag)


# ---- generated histories ---------------------------------------------------------------------

a_change = st.tuples(
    st.sampled_from(KEYS),
    st.sampled_from(["insert", "update", "delete"]),
    st.sampled_from(["Ann", "Bo", "Cy"]),
)
a_file = st.lists(a_change, min_size=1, max_size=4)


def polled_file(number: int, changes: list[tuple[int, str, str]]) -> bytes:
    """Plain rows (no deletes: a polled table only sees rows), stamped in file order."""
    rows = [staff(key, number * 10 + i, name) for i, (key, _, name) in enumerate(changes)]
    return dump_rows(SPEC, rows)


def log_mode_file(number: int, changes: list[tuple[int, str, str]]) -> bytes:
    """Log changes with commit positions in file order (file `number`'s come after those of
    every lower-numbered file, whenever it is merged)."""
    out = []
    for i, (key, op, name) in enumerate(changes):
        minutes, lsn = number * 10 + i, number * 100 + i + 1
        row = key if op == "delete" else staff(key, minutes, name)
        out.append(logged(row, op, minutes, lsn, xid=900 + number))
    return log_file(out)


def detail_of(body: str) -> SourceChange:
    detail = parse_message(body)
    assert detail is not None, body
    return SourceChange.from_event(detail)


def deliver_shuffled(chain: TransformChain, order: list[int], crash_at: int | None) -> None:
    """The queued events in a generated order, each possibly twice; the first one the
    transform dies in `crash_at` writes into, to be redelivered later."""
    bodies = [m["Body"] for m in chain.receive()]
    if not bodies:
        return
    picked = [bodies[i % len(bodies)] for i in order] + bodies  # every event at least once
    if crash_at is not None:  # (an event with fewer writes than that finishes)
        with contextlib.suppress(TransformDied):
            TransformService(CrashAtWrite(crash_at)).apply(detail_of(picked[0]))
    for body in picked:
        assert chain.invoke([body]) == []
    chain.delivered += bodies


def expected_rows(store: BucketStore, key: int) -> list[dict[str, Any]]:
    """What `ingestctl history` shows of the key, as change rows (typed as the model reads
    the stored row)."""
    spec = effective_spec(store, SPEC)
    out = []
    for number, v in enumerate(row_history(store, spec, key), 1):
        change = v.change
        logged_change = change is not None and change.lsn is not None
        row = SPEC.row_model.model_validate(dict(v.row)).model_dump()
        out.append(
            {
                **{c: row[c] for c in SOURCE_COLUMNS},
                "version": number,
                "valid_from": v.valid_from,
                "valid_to": v.valid_to,
                "operation": v.op,
                "deleted_at": v.deleted_at,
                "commit_ts": change.commit_ts if change and logged_change else None,
                "commit_lsn": change.lsn if change else None,
                "commit_xid": change.xid if change else None,
            }
        )
    return out


def check(chain: TransformChain) -> None:
    rows = chain.table(TABLE.name)
    for key in KEYS:
        found = [r for r in rows if r["staff_id"] == key]
        assert found == expected_rows(chain.store, key), key
    assert {r["staff_id"] for r in rows} <= set(KEYS)


@pytest.mark.usefixtures("aws_env")
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    log_mode=st.booleans(),
    files=st.lists(a_file, min_size=1, max_size=5),
    merge_order=st.randoms(use_true_random=False),
    rounds=st.lists(
        st.tuples(
            st.lists(st.integers(0, 9), max_size=4),  # events out of order and redelivered
            st.none() | st.integers(1, 4),  # the transform dies before its nth write
        ),
        min_size=5,
        max_size=5,
    ),
)
def test_the_change_table_agrees_with_history_for_every_key(
    log_mode, files, merge_order, rounds
) -> None:
    with mock_aws(), aws_like_moto():
        chain = TransformChain()
        try:
            baseline = [staff(key, 0, "Zed") for key in KEYS]
            chain.merge("staff", [r.model_dump() for r in baseline], baseline=True)
            numbered = list(enumerate(files, 1))
            merge_order.shuffle(numbered)  # a later file may hold earlier changes
            make = log_mode_file if log_mode else polled_file
            for step, (number, changes) in enumerate(numbered):
                observed = None if log_mode else datetime.now(UTC) + timedelta(seconds=number)
                outcome = chain.merge_file("staff", make(number, changes), observed)
                assert outcome.status.value != "quarantined", outcome
                order, crash_at = rounds[step % len(rounds)]
                if step % 2:  # events wait: several at once, in any order
                    deliver_shuffled(chain, order, crash_at)
            deliver_shuffled(chain, [], None)
            check(chain)
            assert_rebuilds_to_the_same_bytes(chain, (TABLE.name,))
        finally:
            transform_handler.use_runtime(None)


def test_a_deleted_key_keeps_its_versions_with_the_delete(chain) -> None:
    chain.merge_file("staff", dump_rows(SPEC, [staff(1, 0, "A")]), T0)  # read at T0
    chain.merge_file(
        "staff",
        log_file([logged(staff(1, 5, "B"), "update", 5, 1), logged(1, "delete", 6, 2, xid=701)]),
    )
    chain.deliver()
    rows = chain.table(TABLE.name)
    assert [(r["first_name"], r["operation"], r["version"]) for r in rows] == [
        ("A", "insert", 1),
        ("B", "update", 2),
    ]
    assert rows[0]["commit_ts"] is None  # polled: no commit of its own
    assert rows[0]["valid_to"] == rows[1]["valid_from"]
    assert rows[1]["deleted_at"] == rows[1]["valid_to"] == T0 + timedelta(minutes=6)
    assert rows[1]["commit_ts"] == T0 + timedelta(minutes=5)
    assert rows[1]["commit_lsn"] is not None
    assert rows[1]["commit_xid"] == 700
    assert rows == expected_rows(chain.store, 1)
