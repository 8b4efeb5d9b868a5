"""The streamed ingest's pieces without a database: the file bytes, the window tracker, the
streamed put (moto), the problem report."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.ingest.ingest import (
    Entry,
    Scan,
    TableDataError,
    WindowTracker,
    capped_watermark,
    clock_of,
    digest,
    file_chunks,
    key_of,
    next_state,
)
from shared.rows import dump_rows, row_json
from shared.schemas import RowModel, Staff
from shared.tables import TABLES

SPEC = TABLES["staff"]
T0 = datetime(2024, 11, 14, 9, 0)
OVERLAP = timedelta(minutes=5)


def _staff(key: int, stamp: datetime, name: str = "Ann") -> Staff:
    return Staff(
        staff_id=key,
        first_name=name,
        last_name="Lee",
        department_id=1,
        email_address="a.b@terrifictotes.com",
        created_at=stamp,
        last_updated=stamp,
    )


def _raw(row: RowModel) -> dict[str, Any]:
    return {c: getattr(row, c) for c in SPEC.columns}


# -- the file's bytes ------------------------------------------------------------------------
@pytest.mark.parametrize("count", [0, 1, 2, 499, 500, 501, 1234])
def test_a_streamed_file_has_the_bytes_of_dump_rows(count):
    rows = [_staff(k, T0 + timedelta(seconds=k), name=f"Ann \u00e9 {k}") for k in range(count)]
    chunks = list(file_chunks(row_json(SPEC, r) for r in rows))
    assert b"".join(chunks) == dump_rows(SPEC, rows)
    assert len(chunks) == (count // 500) + 1  # pieces of 500 lines (then the end), not per row


# -- the watermark and the window ------------------------------------------------------------
def test_the_watermark_is_capped_at_the_database_clock_of_the_read():
    clock = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert clock_of(clock) == datetime(2026, 12, 2, 12, 0)
    plus_one = datetime(2026, 12, 2, 13, 0, tzinfo=UTC).astimezone()  # any zone: the same time
    assert clock_of(plus_one) == datetime(2026, 12, 2, 13, 0)
    naive = clock_of(clock)
    assert capped_watermark(None, None, naive) is None
    assert capped_watermark(None, naive - OVERLAP, naive) == naive - OVERLAP
    assert capped_watermark(None, naive + timedelta(days=1), naive) == naive
    # A watermark an older version left in the future comes back to the clock.
    assert capped_watermark(naive + timedelta(days=1), None, naive) == naive


def test_a_future_row_stays_in_recent_until_the_clock_passes_it():
    clock = T0 + timedelta(hours=1)
    future = _staff(1, clock + timedelta(days=1))
    ordinary = _staff(2, clock - timedelta(minutes=1))
    old = _staff(3, clock - timedelta(hours=1))
    state = next_state(SPEC, None, [future, ordinary, old], OVERLAP, read_at=clock)
    assert state.watermark == clock
    assert state.recent == {1: digest(SPEC, future), 2: digest(SPEC, ordinary)}
    # The next run re-reads the future row; the state keeps deduping it.
    later = clock + timedelta(minutes=20)
    again = next_state(SPEC, state.watermark, [future], OVERLAP, read_at=later)
    assert (again.watermark, again.recent) == (later, {1: digest(SPEC, future)})
    # Once the clock has passed it, the watermark is the data's again.
    past = future.last_updated + timedelta(minutes=1)
    assert next_state(SPEC, again.watermark, [future], OVERLAP, read_at=past).watermark == (
        future.last_updated
    )


def test_the_tracker_keeps_exactly_the_final_window_whatever_the_row_order():
    generator = random.Random(16)
    for _ in range(30):
        count = generator.choice([10, 1500, 5000])
        stamps = [T0 + timedelta(seconds=generator.randrange(0, 20_000)) for _ in range(count)]
        rows = [_staff(k, stamp) for k, stamp in enumerate(stamps)]
        previous = generator.choice([None, T0 + timedelta(seconds=10_000)])
        clock = T0 + timedelta(seconds=generator.choice([5_000, 19_000, 30_000]))
        state = next_state(SPEC, previous, rows, OVERLAP, read_at=clock)
        expected = capped_watermark(previous, max(stamps), clock)
        assert expected is not None
        assert state.watermark == expected
        start = expected - OVERLAP
        assert state.recent == {
            key_of(SPEC, r): digest(SPEC, r) for r in rows if r.last_updated >= start
        }


# -- problems --------------------------------------------------------------------------------
def test_a_scan_counts_every_problem_but_keeps_a_bounded_report():
    good = [_raw(_staff(k, T0)) for k in range(10)]
    bad = [{**_raw(_staff(k, T0)), "department_id": "x"} for k in range(10, 1510)]
    scan = Scan(SPEC, WindowTracker(SPEC, None, T0, OVERLAP))
    yielded: list[Entry] = []
    with pytest.raises(TableDataError) as caught:
        yielded.extend(scan.entries(iter([good[:5], good[5:] + bad[:700], bad[700:]])))
    assert [e.key for e in yielded] == [0, 1, 2, 3, 4]  # nothing after the page with a bad row
    assert caught.value.total == 1500
    assert len(caught.value.problems) == 1000
    assert "1500 problem(s)" in str(caught.value)
    assert "... and 1490 more" in str(caught.value)
    assert caught.value.problems[0].row_index == 10  # counted from the table's first row


def test_rows_are_read_through_a_server_side_cursor_a_page_at_a_time():
    from services.ingest.source import declare_sql, fetch_sql

    declare = declare_sql(SPEC, since=True)
    assert declare.startswith('DECLARE ingest_rows NO SCROLL CURSOR FOR SELECT "staff_id"')
    assert declare.endswith('WHERE "last_updated" >= :since ORDER BY "staff_id"')
    assert fetch_sql(500) == "FETCH FORWARD 500 FROM ingest_rows"
