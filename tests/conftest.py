"""Fixtures every test folder may use."""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.pg import LocalPostgres, PostgresUnavailableError


def started_postgres(
    prefix: str, check: Callable[[LocalPostgres], None] = lambda _: None
) -> Iterator[LocalPostgres]:
    """A real PostgreSQL on loopback in a folder of its own, stopped and removed afterwards;
    skips where no server can be had (or `check` skips, before it starts)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        server = LocalPostgres(folder)
    except PostgresUnavailableError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(str(exc))
    check(server)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    """One real PostgreSQL on loopback per test worker (tests using it share xdist_group
    "postgres"); each test makes its own database in it. Skips where no server can be had."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    yield from started_postgres(f"ingest-pg-{worker}-")
