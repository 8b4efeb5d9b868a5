"""The canonical-text splice gives exactly what parsing, merging and dumping every row gives."""

import random
from datetime import datetime, timedelta

import pytest

from services.merge.rowsfile import RowsFile
from shared.rows import FileFormatError, dump_rows, load_rows
from shared.schemas import Staff
from shared.tables import TABLES

SPEC = TABLES["staff"]
T0 = datetime(2024, 11, 14, 9, 0, 0)


def staff(key, minutes=0, name="Jeremie"):
    return Staff(
        staff_id=key,
        first_name=name,
        last_name='Fra,\n{"ney',  # separators and a newline inside a value must not confuse it
        department_id=2,
        email_address=f"s{key}@terrifictotes.com",
        created_at=T0,
        last_updated=T0 + timedelta(minutes=minutes),
    )


@pytest.mark.parametrize("seed", range(30))
def test_replacing_rows_equals_dumping_the_merged_rows(seed):
    rng = random.Random(seed)
    keys = sorted(rng.sample(range(1, 200), rng.randint(0, 40)))
    rows = {k: staff(k) for k in keys}
    file = RowsFile.parse(SPEC, dump_rows(SPEC, rows.values()), "t")
    assert file.rows == len(keys)
    touched = rng.sample(range(0, 210), rng.randint(0, 15))
    new = {k: staff(k, 20, name="New") for k in touched}
    assert file.held(touched) == {k: rows[k] for k in touched if k in rows}
    for key in touched:
        assert file.find(key)[1] == (key in rows)
    merged = {**rows, **new}
    assert file.replaced(new).dump() == dump_rows(SPEC, [merged[k] for k in sorted(merged)])
    low = rng.randint(0, 200)
    high = low + rng.randint(0, 50)
    assert file.slice(low, high).dump() == dump_rows(
        SPEC, [rows[k] for k in keys if low <= k <= high]
    )
    assert file.first_and_last_keys() == ((keys[0], keys[-1]) if keys else None)


def test_a_file_not_in_the_canonical_layout_is_validated_and_sorted():
    data = (
        b"["
        + b",".join(dump_rows(SPEC, [r]).strip()[1:-1].strip() for r in [staff(3), staff(1)])
        + b"]"
    )
    file = RowsFile.parse(SPEC, data, "t")
    assert file.dump() == dump_rows(SPEC, [staff(1), staff(3)])
    with pytest.raises(FileFormatError, match="invalid rows"):
        RowsFile.parse(SPEC, b'[{"staff_id": 1}]', "t")
    assert load_rows(SPEC, file.dump(), "t").rows == [staff(1), staff(3)]
