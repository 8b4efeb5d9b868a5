"""The source database: credentials, and the one adapter that reads PostgreSQL.

Only tables of the registry are ever read, and only the registry's columns, named one by one:
the real database's physical column order differs from the ERD, and it holds tables of its
own (Prisma's `_prisma_migrations`) that are none of our business. Identifiers are quoted by
pg8000's own `identifier()`, values go as parameters.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote, urlsplit

import boto3
import pg8000.native
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from shared.tables import TableSpec

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

Row = dict[str, Any]


class SourceConfigError(ValueError):
    """Credentials that cannot be used: a malformed URL or secret."""


class SourceCredentials(BaseModel):
    """How to reach the source database (the shape of the Secrets Manager secret)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    host: str
    port: int = 5432
    # RDS-managed secrets say `dbname` and `username`; ours say `database` and `user`.
    database: str = Field(validation_alias=AliasChoices("database", "dbname"))
    user: str = Field(validation_alias=AliasChoices("user", "username"))
    password: str = Field(repr=False)
    ssl: bool = False

    @classmethod
    def from_url(cls, url: str) -> SourceCredentials:
        """`postgresql://user:pass@host:port/db` (`?sslmode=require` turns TLS on)."""
        parts = urlsplit(url)
        if parts.scheme not in {"postgresql", "postgres"}:
            raise SourceConfigError("source URL must start with postgresql://")
        if not parts.hostname or not parts.username or not parts.path.strip("/"):
            raise SourceConfigError("source URL must name user, host and database")
        return cls(
            host=parts.hostname,
            port=parts.port or 5432,
            database=unquote(parts.path.strip("/")),
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            ssl="sslmode=require" in parts.query or "sslmode=verify" in parts.query,
        )

    def url(self) -> str:
        user, secret = quote(self.user, safe=""), quote(self.password, safe="")
        query = "?sslmode=require" if self.ssl else ""
        database = quote(self.database, safe="")
        return f"postgresql://{user}:{secret}@{self.host}:{self.port}/{database}{query}"


class SecretsManagerCredentials:
    """Reads the source credentials from a Secrets Manager secret (JSON), on first use."""

    def __init__(self, secret_id: str, client: SecretsManagerClient | None = None) -> None:
        self.secret_id = secret_id
        self._injected = client

    @cached_property
    def client(self) -> SecretsManagerClient:
        return self._injected or boto3.client("secretsmanager")

    def __call__(self) -> SourceCredentials:
        secret = self.client.get_secret_value(SecretId=self.secret_id)
        text = secret.get("SecretString")
        if text is None:
            raise SourceConfigError(f"secret {self.secret_id} holds no SecretString")
        try:
            return SourceCredentials.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as exc:
            # Never echo the secret itself: name what is wrong, not the value.
            what = exc.msg if isinstance(exc, json.JSONDecodeError) else _fields(exc)
            raise SourceConfigError(f"secret {self.secret_id} is not usable: {what}") from None


def _fields(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def connect(credentials: SourceCredentials) -> pg8000.native.Connection:
    return pg8000.native.Connection(
        user=credentials.user,
        password=credentials.password,
        host=credentials.host,
        port=credentials.port,
        database=credentials.database,
        ssl_context=ssl.create_default_context() if credentials.ssl else None,
        timeout=60,
        application_name="ingest",
    )


class SourceUnavailableError(RuntimeError):
    """The database cannot be reached at all: no table of this run can be read."""


@dataclass(frozen=True)
class SourceRead:
    """A table's rows and when the database read them, by its own clock (the observation the
    merge orders versions by: shared/observation.py)."""

    rows: list[Row]
    read_at: datetime


class TableSource(Protocol):
    """What the ingest needs from the source: a table's rows, all or changed since a time,
    and the database's time of the read."""

    def read(self, spec: TableSpec, since: datetime | None) -> SourceRead: ...


def select_sql(spec: TableSpec, *, since: bool) -> str:
    """The SELECT of a registry table: its columns named, filtered on `last_updated`."""
    ident = pg8000.native.identifier
    columns = ", ".join(ident(c) for c in spec.columns)
    where = f" WHERE {ident('last_updated')} > :since" if since else ""
    return f"SELECT {columns} FROM {ident(spec.name)}{where} ORDER BY {ident(spec.primary_key)}"


# One snapshot per table read: the rows and the clock come from the same read-only transaction,
# and the statement that reads the clock is its first, the one that takes the snapshot.
BEGIN_READ = "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
CLOCK_SQL = "SELECT clock_timestamp()"


class PostgresSource:
    """Reads registry tables with pg8000; connects on first read, read-only."""

    def __init__(self, credentials: Callable[[], SourceCredentials]) -> None:
        self._credentials = credentials
        self._conn: pg8000.native.Connection | None = None

    def _connection(self) -> pg8000.native.Connection:
        if self._conn is None:
            credentials = self._credentials()
            try:
                conn = connect(credentials)
                conn.run("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            except (OSError, pg8000.native.InterfaceError, pg8000.native.DatabaseError) as exc:
                where = f"{credentials.host}:{credentials.port}/{credentials.database}"
                raise SourceUnavailableError(f"cannot connect to {where}: {exc}") from exc
            self._conn = conn
        return self._conn

    def read(self, spec: TableSpec, since: datetime | None) -> SourceRead:
        conn = self._connection()
        sql = select_sql(spec, since=since is not None)
        try:
            conn.run(BEGIN_READ)
            try:
                ((read_at,),) = conn.run(CLOCK_SQL)
                rows = conn.run(sql, since=since) if since is not None else conn.run(sql)
                conn.run("COMMIT")
            except pg8000.native.DatabaseError:
                conn.run("ROLLBACK")  # the next table starts a transaction of its own
                raise
        except pg8000.native.InterfaceError:
            self.close()  # a broken connection: the next table connects afresh
            raise
        return SourceRead(
            rows=[dict(zip(spec.columns, values, strict=True)) for values in rows],
            read_at=read_at,
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError, pg8000.native.InterfaceError):  # already gone
                conn.close()

    def __enter__(self) -> PostgresSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
