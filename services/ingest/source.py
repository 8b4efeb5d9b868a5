"""The source database: credentials, and the one adapter that reads PostgreSQL.

Only tables of the registry are ever read, their columns named one by one: the real
database's physical column order differs from the ERD, and it holds tables of its own
(Prisma's `_prisma_migrations`) that are none of our business. Each read lists the table's
columns in its own transaction: the registry's come first, in the registry's order, and any
the source added since follow (schema drift, for the merge's policy to decide on).
Identifiers are quoted by pg8000's own `identifier()`, values go as parameters. Rows come
through a server-side cursor (`DECLARE ... NO SCROLL CURSOR`, `FETCH FORWARD n`) in the read's
own transaction, a page at a time, so no read holds a whole table.

TLS follows libpq's `sslmode` meanings (docs/decisions.md): `disable` never encrypts,
`prefer` (the default where nothing says otherwise) tries TLS without verifying and falls back
to plain text, `require` encrypts without verifying the certificate, `verify-ca` verifies the
chain against the CA bundle and `verify-full` the chain and the host name. The stack always
sets one of the last three.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import boto3
import pg8000.native
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from shared.schema_state import added_columns, added_value_of
from shared.tables import TableSpec

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

Row = dict[str, Any]

SslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]
VERIFYING: frozenset[str] = frozenset({"verify-ca", "verify-full"})
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
# The URL query parameters read (libpq's names); any other is refused rather than ignored.
URL_PARAMETERS = ("sslmode", "sslrootcert")
# Where each setting can be given besides the secret, for error messages.
OVERRIDDEN_BY = {
    "host": "SOURCE_HOST",
    "port": "SOURCE_PORT",
    "database": "SOURCE_DATABASE",
    "sslmode": "SOURCE_SSLMODE",
    "sslrootcert": "SOURCE_CA_BUNDLE",
}


class SourceConfigError(ValueError):
    """Credentials that cannot be used: a malformed URL or secret, or an unreadable CA bundle."""


class SourceCredentials(BaseModel):
    """How to reach the source database and how far to trust it (the secret's shape)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    host: str = Field(min_length=1)
    port: int = Field(default=5432, ge=1, le=65535)
    # RDS secrets say `dbname` and `username`; ours say `database` and `user`.
    database: str = Field(min_length=1, validation_alias=AliasChoices("database", "dbname"))
    user: str = Field(min_length=1, validation_alias=AliasChoices("user", "username"))
    password: str = Field(repr=False)
    sslmode: SslMode = "prefer"
    # The CAs verify-ca / verify-full trust: PEM text (a secret's `ca_bundle`) and/or a file
    # (`sslrootcert`, as in libpq). Neither: the system's trust store (RDS's CA is not in it).
    ca_bundle: str | None = Field(default=None, repr=False)
    sslrootcert: str | None = None

    @field_validator("ca_bundle")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value is not None and PEM_CERTIFICATE not in value:
            raise ValueError(
                f"must hold PEM certificates ({PEM_CERTIFICATE} ...); to name a file, use "
                "sslrootcert"
            )
        return value

    @classmethod
    def from_url(cls, url: str) -> SourceCredentials:
        """`postgresql://user:pass@host:port/db?sslmode=verify-full&sslrootcert=ca.pem`."""
        parts = urlsplit(url)
        if parts.scheme not in {"postgresql", "postgres"}:
            raise SourceConfigError("source URL must start with postgresql://")
        try:
            port = parts.port
        except ValueError:
            raise SourceConfigError("source URL has a port that is not a number") from None
        if not parts.hostname or not parts.username or not parts.path.strip("/"):
            raise SourceConfigError("source URL must name user, host and database")
        fields = {
            "host": parts.hostname,
            "port": port or 5432,
            "database": unquote(parts.path.strip("/")),
            "user": unquote(parts.username),
            "password": unquote(parts.password or ""),
            **_url_query(parts.query),
        }
        return credentials_from_fields(fields, "source URL")

    def url(self) -> str:
        if self.ca_bundle:
            raise SourceConfigError("a ca_bundle (PEM text) cannot be written into a URL")
        user, secret = quote(self.user, safe=""), quote(self.password, safe="")
        query: dict[str, str] = {"sslmode": self.sslmode} if self.sslmode != "prefer" else {}
        if self.sslrootcert:
            query["sslrootcert"] = self.sslrootcert
        suffix = f"?{urlencode(query, quote_via=quote)}" if query else ""
        database = quote(self.database, safe="")
        return f"postgresql://{user}:{secret}@{self.host}:{self.port}/{database}{suffix}"


def _url_query(query: str) -> dict[str, str]:
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(params) - set(URL_PARAMETERS))
    if unknown:
        raise SourceConfigError(
            f"source URL parameter(s) {', '.join(unknown)} not supported "
            f"(supported: {', '.join(URL_PARAMETERS)})"
        )
    return params


class SourceOverrides(BaseModel):
    """What the deployment says about the connection (stack parameters, as env vars): each
    given value wins over the secret's (or URL's), so an RDS-managed secret holding only
    `username` and `password` is enough."""

    model_config = ConfigDict(frozen=True)

    host: str | None = None
    port: int | None = None
    database: str | None = None
    sslmode: SslMode | None = None
    sslrootcert: str | None = None

    def over(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        # `database` is the first alias, so it beats a secret's `dbname`.
        return {**fields, **self.model_dump(exclude_none=True)}

    def apply(self, credentials: SourceCredentials, what: str) -> SourceCredentials:
        return credentials_from_fields(self.over(credentials.model_dump()), what)


def credentials_from_fields(fields: Mapping[str, Any], what: str) -> SourceCredentials:
    """Validated credentials; an error names the fields at fault, never their values."""
    try:
        return SourceCredentials.model_validate(fields)
    except ValidationError as exc:
        raise SourceConfigError(f"{what} is not usable: {_fields(exc)}") from None


def _fields(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        hint = OVERRIDDEN_BY.get(where)
        also = f" (or set {hint})" if hint and error["type"] == "missing" else ""
        problems.append(f"{where}: {error['msg']}{also}")
    return "; ".join(problems)


class SecretsManagerCredentials:
    """Reads the source credentials from a Secrets Manager secret (JSON), on first use, with
    the deployment's overrides on top."""

    def __init__(
        self,
        secret_id: str,
        client: SecretsManagerClient | None = None,
        overrides: SourceOverrides | None = None,
    ) -> None:
        self.secret_id = secret_id
        self._injected = client
        self.overrides = overrides or SourceOverrides()

    @cached_property
    def client(self) -> SecretsManagerClient:
        return self._injected or boto3.client("secretsmanager")

    def __call__(self) -> SourceCredentials:
        secret = self.client.get_secret_value(SecretId=self.secret_id)
        text = secret.get("SecretString")
        what = f"secret {self.secret_id}"
        if text is None:
            raise SourceConfigError(f"{what} holds no SecretString")
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as exc:
            # Never echo the secret itself: name what is wrong, not the value.
            raise SourceConfigError(f"{what} is not usable: {exc.msg}") from None
        if not isinstance(fields, dict):
            raise SourceConfigError(f"{what} is not usable: not a JSON object")
        return credentials_from_fields(self.overrides.over(fields), what)


def ssl_context(credentials: SourceCredentials) -> ssl.SSLContext | bool | None:
    """pg8000's `ssl_context` for the sslmode: False never asks for TLS, None asks and falls
    back to plain text (`prefer`), a context insists on TLS."""
    mode = credentials.sslmode
    if mode == "disable":
        return False
    if mode == "prefer":
        return None
    # Not ssl.create_default_context(): from Python 3.13 it adds VERIFY_X509_STRICT, which
    # refuses some CA certificates libpq (OpenSSL's defaults) accepts.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context.check_hostname = mode == "verify-full"
    _trust(context, credentials)
    return context


def _trust(context: ssl.SSLContext, credentials: SourceCredentials) -> None:
    if not credentials.sslrootcert and not credentials.ca_bundle:
        context.load_default_certs()
        return
    if credentials.sslrootcert:
        try:
            context.load_verify_locations(cafile=credentials.sslrootcert)
        except OSError as exc:  # ssl.SSLError (no certificate in it) is an OSError too
            reason = str(exc) if isinstance(exc, ssl.SSLError) else exc.strerror or str(exc)
            raise SourceConfigError(
                f"CA bundle {credentials.sslrootcert} (sslrootcert) cannot be used: {reason}"
            ) from None
    if credentials.ca_bundle:
        try:
            context.load_verify_locations(cadata=credentials.ca_bundle)
        except ssl.SSLError as exc:
            raise SourceConfigError(f"ca_bundle holds no usable certificate: {exc}") from None


def trusted_by(credentials: SourceCredentials) -> str:
    """Which CAs a verifying connection trusts, in words (for error messages)."""
    sources = []
    if credentials.sslrootcert:
        sources.append(f"the CA bundle {credentials.sslrootcert}")
    if credentials.ca_bundle:
        sources.append("the secret's ca_bundle")
    return " and ".join(sources) or "the system trust store (which does not hold RDS's CA)"


def connect(credentials: SourceCredentials) -> pg8000.native.Connection:
    return _connection_to(credentials, ssl_context(credentials))


def _connection_to(
    credentials: SourceCredentials, context: ssl.SSLContext | bool | None
) -> pg8000.native.Connection:
    return pg8000.native.Connection(
        user=credentials.user,
        password=credentials.password,
        host=credentials.host,
        port=credentials.port,
        database=credentials.database,
        ssl_context=context,
        timeout=60,
        application_name="ingest",
    )


def _open(
    credentials: SourceCredentials, context: ssl.SSLContext | bool | None
) -> pg8000.native.Connection:
    """A read-only session."""
    conn = _connection_to(credentials, context)
    try:
        conn.run("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    except BaseException:
        with contextlib.suppress(OSError, pg8000.native.InterfaceError):
            conn.close()
        raise
    return conn


class SourceUnavailableError(RuntimeError):
    """The database cannot be reached at all: no table of this run can be read."""


def unavailable(credentials: SourceCredentials, exc: Exception) -> SourceUnavailableError:
    """The connection failure, saying where and, for TLS, what was not trusted."""
    where = f"{credentials.host}:{credentials.port}/{credentials.database}"
    message = f"cannot connect to {where} (sslmode={credentials.sslmode}): {exc}"
    return SourceUnavailableError(message + _hint(credentials, exc))


X509_V_ERR_HOSTNAME_MISMATCH = 62  # OpenSSL's verify code


def _hint(credentials: SourceCredentials, exc: Exception) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == X509_V_ERR_HOSTNAME_MISMATCH:
            return (
                f"; the certificate does not name {credentials.host}: connect by a name it "
                "holds (verify-full checks it, verify-ca does not)"
            )
        return f"; the server's certificate was checked against {trusted_by(credentials)}"
    if "no encryption" in str(exc):
        return "; the server accepts only TLS connections: set sslmode"
    return ""


@dataclass(frozen=True)
class SourceRead:
    """A table's rows and when the database read them, by its own clock (the observation the
    merge orders versions by: shared/observation.py)."""

    rows: list[Row]
    read_at: datetime
    extra_columns: tuple[str, ...] = ()  # as `SourcePages.extra_columns`


@dataclass(frozen=True)
class SourcePages:
    """A table's rows page by page, as a server-side cursor gives them, and when the database
    read them. The pages come from one open transaction: iterate them inside the `with`."""

    read_at: datetime
    pages: Iterator[list[Row]]
    # the table's columns the registry's model does not name, in the table's order: the rows
    # hold them after the model's (as `shared.schema_state.added_value_of` writes them), for
    # the merge's schema policy (`TableSpec.schema_policy`)
    extra_columns: tuple[str, ...] = ()


# Rows per FETCH of a streamed read: memory follows a page, not the table.
PAGE_ROWS = 1000


class TableSource(Protocol):
    """What the ingest needs from the source: a table's rows, all or changed since a time
    (whole, or page by page), and the database's time of the read."""

    def read(self, spec: TableSpec, since: datetime | None) -> SourceRead: ...

    def pages(
        self, spec: TableSpec, since: datetime | None, *, page_rows: int = PAGE_ROWS
    ) -> AbstractContextManager[SourcePages]: ...


def select_sql(spec: TableSpec, *, since: bool, columns: Sequence[str] = ()) -> str:
    """The SELECT of a registry table: its columns (`columns`, else the model's) named,
    filtered on `last_updated` (from `since` on, inclusive: a row stamped exactly at the
    window's start is read)."""
    ident = pg8000.native.identifier
    columns = ", ".join(ident(c) for c in columns or spec.columns)
    where = f" WHERE {ident('last_updated')} >= :since" if since else ""
    return f"SELECT {columns} FROM {ident(spec.name)}{where} ORDER BY {ident(spec.primary_key)}"


# The table's columns, in their order, resolved as the SELECT resolves the table's name.
COLUMNS_SQL = (
    "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass(:table) "
    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
)


def read_columns(spec: TableSpec, actual: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The columns to select, and which of them the model does not name: the model's that the
    table has (one it lacks is its rows' problem, named by validation), then the table's
    others. No columns found (no such table): the model's, for the SELECT to fail on."""
    if not actual:
        return spec.columns, ()
    extras = tuple(c for c in actual if c not in spec.columns)
    return (*(c for c in spec.columns if c in actual), *extras), extras


# One snapshot per table read: the rows and the clock come from the same read-only transaction,
# and the statement that reads the clock is its first, the one that takes the snapshot.
BEGIN_READ = "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
CLOCK_SQL = "SELECT clock_timestamp()"
# The rows come through a server-side cursor of that transaction, a page per FETCH.
CURSOR = "ingest_rows"


def declare_sql(spec: TableSpec, *, since: bool, columns: Sequence[str] = ()) -> str:
    select = select_sql(spec, since=since, columns=columns)
    return f"DECLARE {CURSOR} NO SCROLL CURSOR FOR {select}"


def fetch_sql(page_rows: int) -> str:
    return f"FETCH FORWARD {int(page_rows)} FROM {CURSOR}"


class PostgresSource:
    """Reads registry tables with pg8000; connects on first read, read-only."""

    def __init__(self, credentials: Callable[[], SourceCredentials]) -> None:
        self._credentials = credentials
        self._conn: pg8000.native.Connection | None = None

    def _connection(self) -> pg8000.native.Connection:
        if self._conn is None:
            try:
                credentials = self._credentials()
                context = ssl_context(credentials)
            except (SourceConfigError, BotoCoreError, ClientError) as exc:
                # The same for every table (a bad secret, no route to Secrets Manager): fail
                # them all at once.
                raise SourceUnavailableError(f"source credentials: {exc}") from exc
            try:
                conn = _open(credentials, context)
            except (OSError, pg8000.native.InterfaceError, pg8000.native.DatabaseError) as exc:
                raise unavailable(credentials, exc) from exc
            self._conn = conn
        return self._conn

    def read(self, spec: TableSpec, since: datetime | None) -> SourceRead:
        """The whole table (or its rows since a time) in memory: for the small tables only."""
        with self.pages(spec, since) as read:
            rows = [row for page in read.pages for row in page]
        return SourceRead(rows=rows, read_at=read.read_at, extra_columns=read.extra_columns)

    @contextlib.contextmanager
    def pages(
        self, spec: TableSpec, since: datetime | None, *, page_rows: int = PAGE_ROWS
    ) -> Iterator[SourcePages]:
        """The rows page by page from a server-side cursor, in the read's transaction, which
        is committed when the `with` ends and rolled back when it raises."""
        conn = self._connection()
        try:
            conn.run(BEGIN_READ)
            try:
                ((read_at,),) = conn.run(CLOCK_SQL)
                table = pg8000.native.identifier(spec.name)
                actual = [name for (name,) in conn.run(COLUMNS_SQL, table=table)]
                columns, extras = read_columns(spec, actual)
                params = {} if since is None else {"since": since}
                conn.run(declare_sql(spec, since=since is not None, columns=columns), **params)
                added = (*added_columns(spec), *extras)  # held as text, number or boolean
                pages = _fetch(conn, columns, added, page_rows)
                yield SourcePages(read_at=read_at, pages=pages, extra_columns=extras)
                conn.run("COMMIT")
            except BaseException:
                self._roll_back(conn)  # the next table starts a transaction of its own
                raise
        except pg8000.native.InterfaceError:
            self.close()  # a broken connection: the next table connects afresh
            raise

    def _roll_back(self, conn: pg8000.native.Connection) -> None:
        try:
            conn.run("ROLLBACK")
        except (OSError, pg8000.native.InterfaceError, pg8000.native.DatabaseError):
            self.close()  # cannot even roll back: the next table connects afresh

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError, pg8000.native.InterfaceError):  # already gone
                conn.close()

    def __enter__(self) -> PostgresSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fetch(
    conn: pg8000.native.Connection, columns: Sequence[str], added: Sequence[str], page_rows: int
) -> Iterator[list[Row]]:
    fetch = fetch_sql(page_rows)
    while True:
        values = conn.run(fetch)
        if not values:
            return
        rows = [dict(zip(columns, row, strict=True)) for row in values]
        for row in rows if added else ():
            row.update((name, added_value_of(row[name])) for name in added)
        yield rows
        if len(values) < page_rows:
            return
