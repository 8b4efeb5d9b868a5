from ops.sample_data import SampleDatabase
from shared.rows import dump_rows, validate_rows
from shared.tables import TABLES


def test_same_seed_gives_the_same_data_and_another_seed_does_not():
    def render(seed):
        db = SampleDatabase(seed)
        db.advance()
        return {n: dump_rows(s, validate_rows(s, db.rows(n), n).rows) for n, s in TABLES.items()}

    assert render(3) == render(3)
    assert render(3) != render(4)


def test_foreign_keys_point_at_existing_rows():
    db = SampleDatabase(1, orders=30)
    for _ in range(3):
        db.advance(sales=4, purchases=2)
    ids = {name: set(rows) for name, rows in db.tables.items()}
    for order in db.tables["sales_order"].values():
        assert order["design_id"] in ids["design"]
        assert order["staff_id"] in ids["staff"]
        assert order["agreed_delivery_location_id"] in ids["address"]
    for payment in db.tables["payment"].values():
        transaction = db.tables["transaction"][payment["transaction_id"]]
        table = "sales_order" if transaction["transaction_type"] == "SALE" else "purchase_order"
        order_id = transaction[f"{table}_id"]
        assert db.tables[table][order_id]["created_at"] == payment["created_at"]
        assert db.tables[table][order_id]["counterparty_id"] == payment["counterparty_id"]
    for staff in db.tables["staff"].values():
        assert staff["department_id"] in ids["department"]


def test_advance_reports_inserts_and_paid_updates_with_newer_timestamps():
    db = SampleDatabase(2, orders=10)
    before = db.rows("payment")
    changed = db.advance(sales=2, purchases=1, payments_paid=3)
    assert len(changed["sales_order"]) == 2
    assert len(changed["purchase_order"]) == 1
    updated = [p for p in changed["payment"] if p["payment_id"] <= len(before)]
    assert len(updated) == 3
    old = {p["payment_id"]: p for p in before}
    for row in updated:
        assert row["paid"] is True
        assert row["last_updated"] > old[row["payment_id"]]["last_updated"]
    assert changed["address"] == []
