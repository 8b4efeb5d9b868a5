"""Row factories the tests share: one staff row of a given version."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.schemas import Staff

T0 = datetime(2024, 11, 14, 9, 0, 0)


def staff(
    key: int,
    minutes: float = 0,
    name: str = "Jeremie",
    *,
    days: float = 0,
    created: datetime = T0,
) -> Staff:
    """Staff `key` as last updated `minutes` (and `days`) after T0."""
    return Staff(
        staff_id=key,
        first_name=name,
        last_name="Franey",
        department_id=2,
        email_address=f"s{key}@terrifictotes.com",
        created_at=created,
        last_updated=T0 + timedelta(days=days, minutes=minutes),
    )
