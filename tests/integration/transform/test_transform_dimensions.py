"""Dimensions hold current values; a change to a joined table updates the dependent rows."""

from datetime import timedelta

from ops.sample_data import SampleDatabase
from shared.reader import read_latest
from shared.tables import TABLES


def latest(chain, table):
    return read_latest(chain.store, TABLES[table]).rows


def test_an_address_change_updates_dim_location_and_its_counterparties(chain):
    for table, rows in SampleDatabase(seed=21, orders=10).snapshot().items():
        chain.merge(table, rows, baseline=True)
    chain.deliver()
    counterparties = latest(chain, "counterparty")
    address_id = counterparties[0].legal_address_id
    at_address = {c.counterparty_id for c in counterparties if c.legal_address_id == address_id}
    (address,) = [a for a in latest(chain, "address") if a.address_id == address_id]
    moved = address.model_copy(
        update={
            "address_line_1": "1 New Street",
            "city": "Leeds",
            "last_updated": address.last_updated + timedelta(days=1),
        }
    )
    untouched = {
        r["counterparty_id"]: r
        for r in chain.table("dim_counterparty")
        if r["counterparty_id"] not in at_address
    }

    chain.merge("address", [moved.model_dump()])
    chain.deliver()

    (location,) = [r for r in chain.table("dim_location") if r["location_id"] == address_id]
    assert (location["address_line_1"], location["city"]) == ("1 New Street", "Leeds")
    after = {r["counterparty_id"]: r for r in chain.table("dim_counterparty")}
    for counterparty in at_address:
        assert after[counterparty]["counterparty_legal_address_line_1"] == "1 New Street"
        assert after[counterparty]["counterparty_legal_city"] == "Leeds"
    assert {k: after[k] for k in untouched} == untouched
    update = chain.updates()[-1]["detail"]
    assert update["tables"]["dim_location"] == len(latest(chain, "address"))
    assert update["tables"]["dim_counterparty"] == len(counterparties)


def test_a_department_change_updates_dim_staff(chain):
    for table, rows in SampleDatabase(seed=22, orders=5).snapshot().items():
        chain.merge(table, rows, baseline=True)
    chain.deliver()
    department = latest(chain, "department")[0]
    renamed = department.model_copy(
        update={
            "department_name": "Renamed",
            "last_updated": department.last_updated + timedelta(hours=1),
        }
    )
    chain.merge("department", [renamed.model_dump()])
    chain.deliver()
    members = {
        s.staff_id for s in latest(chain, "staff") if s.department_id == department.department_id
    }
    assert members
    for row in chain.table("dim_staff"):
        assert (row["department_name"] == "Renamed") == (row["staff_id"] in members)


def test_currency_names_come_from_the_map(chain):
    for table, rows in SampleDatabase(seed=23, orders=3).snapshot().items():
        chain.merge(table, rows, baseline=True)
    chain.deliver()
    names = {r["currency_code"]: r["currency_name"] for r in chain.table("dim_currency")}
    assert names == {"GBP": "British Pound Sterling", "USD": "United States Dollar", "EUR": "Euro"}
