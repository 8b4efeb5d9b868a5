"""The canonical-text splice gives exactly what parsing, merging and dumping every row gives."""

import random
from datetime import datetime, timedelta

import pytest

from services.merge.rowsfile import RowsFile
from shared.observation import Observation
from shared.rows import FileFormatError, dump_rows
from shared.schemas import Staff
from shared.tables import TABLES
from shared.versions import Version, dump_versions, load_versions, version_json

SPEC = TABLES["staff"]
T0 = datetime(2024, 11, 14, 9, 0, 0)
SEEN = Observation(datetime(2026, 12, 1, 12, 0, 0), 0x55AED6)


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
    rows = {k: Version(staff(k), SEEN if k % 3 else None) for k in keys}
    file = RowsFile.parse(SPEC, dump_versions(SPEC, rows.values()), "t")
    assert file.rows == len(keys)
    touched = rng.sample(range(0, 210), rng.randint(0, 15))
    new = {k: Version(staff(k, 20, name="New"), SEEN) for k in touched}
    assert file.held(touched) == {k: rows[k] for k in touched if k in rows}
    for key in touched:
        assert file.find(key)[1] == (key in rows)
    merged = {**rows, **new}
    spliced = file.replaced({k: version_json(SPEC, v) for k, v in new.items()})
    assert spliced.dump() == dump_versions(SPEC, [merged[k] for k in sorted(merged)])
    low = rng.randint(0, 200)
    high = low + rng.randint(0, 50)
    assert file.slice(low, high).dump() == dump_versions(
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
    with pytest.raises(FileFormatError, match="rows invalid"):
        RowsFile.parse(SPEC, b'[{"staff_id": 1}]', "t")
    assert [v.row for v in load_versions(SPEC, file.dump(), "t")] == [staff(1), staff(3)]
