"""Fixtures every test folder may use."""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from ops.local.moto_edge import aws_like_moto
from ops.pg import LocalPostgres, PostgresUnavailableError
from tests.aws import AWS_ENV, AWS_UNSET


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


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and region for moto in this process (tests/aws.py); no mock yet."""
    for name in AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    """moto, with S3 notifications and conditional writes as AWS's (ops/local/moto_edge.py)."""
    with mock_aws(), aws_like_moto():
        yield
