import pytest

from shared.layout import Area, InvalidKeyError, batch_id, parse_trigger_key


@pytest.mark.parametrize(
    ("key", "area", "table"),
    [
        ("staging/staff.json", Area.STAGING, "staff"),
        ("baseline/payment_type.json", Area.BASELINE, "payment_type"),
    ],
)
def test_trigger_keys_name_area_and_table(key, area, table):
    parsed = parse_trigger_key(key)
    assert (parsed.area, parsed.table.name) == (area, table)


@pytest.mark.parametrize(
    "key",
    ["staging/", "staging/a/b.json", "staging/../staff.json", "latest/staff.json",
     "staging/stafff.json", "staging/staff.csv", "staff.json", "staging/staff.json/"],
)  # fmt: skip
def test_other_keys_are_refused(key):
    with pytest.raises(InvalidKeyError):
        parse_trigger_key(key)


def test_batch_id_is_deterministic_and_prefers_the_version():
    assert batch_id("v1", '"abc"') == batch_id("v1", None)
    assert batch_id(None, '"abc"') == batch_id(None, "abc")
    assert batch_id("v1", None) != batch_id("v2", None)
    assert len(batch_id("v1", None)) == 16
