"""Fixtures every test folder may use."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.pg import LocalPostgres, PostgresUnavailableError


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    """One real PostgreSQL on loopback per test worker (tests using it share xdist_group
    "postgres"); each test makes its own database in it. Skips where no server can be had."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    try:
        server = LocalPostgres(Path(tempfile.mkdtemp(prefix=f"ingest-pg-{worker}-")))
    except PostgresUnavailableError as exc:
        pytest.skip(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)
