"""`ingestctl`: the operator CLI."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ops.deployment import Target
from ops.local.functions import DEFAULT_HANDLERS
from ops.sample_data import SampleDatabase
from services.merge.settings import MergeSettings
from shared import naming
from shared.rows import FileFormatError, decode_rows, dump_rows, validate_rows
from shared.schema_state import effective_spec
from shared.tables import TABLES, get_table

if TYPE_CHECKING:
    from ops.operations import Operator
    from shared.storage import ObjectStore

app = typer.Typer(
    name="ingestctl",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

# Exit codes: 0 ok, 1 failure, 2 usage (or no such deployment), 3 `status`: paused or unhealthy.
EXIT_FAILURE, EXIT_USAGE, EXIT_UNHEALTHY = 1, 2, 3
DEPLOYMENT = "Deployment (before the command: ingestctl --stack NAME status)"


def _deployment_option(help: str, envvar: str | None = None) -> Any:
    return typer.Option(help=help, envvar=envvar, rich_help_panel=DEPLOYMENT)


@app.callback()
def deployment(
    ctx: typer.Context,
    stack: Annotated[
        str | None,
        _deployment_option("CloudFormation stack: resources from its outputs.", "INGEST_STACK"),
    ] = None,
    bucket: Annotated[
        str | None,
        _deployment_option(
            "The ingest bucket (no stack: other names from the prefix).",
            MergeSettings.variable("bucket_name"),  # the functions' own variable
        ),
    ] = None,
    prefix: Annotated[str, _deployment_option("Resource name prefix (no stack).")] = (
        naming.DEFAULT_PREFIX
    ),
    endpoint_url: Annotated[
        str | None,
        _deployment_option("AWS endpoint, e.g. the local runtime's http://127.0.0.1:4566."),
    ] = None,
    profile: Annotated[str | None, _deployment_option("AWS CLI profile.")] = None,
    region: Annotated[str | None, _deployment_option("AWS region.")] = None,
) -> None:
    """Operate the ingest bucket: validate files, run it locally, inspect and repair it.

    The options before the command name the deployment it acts on: a stack on AWS (--stack),
    or a bucket (--bucket, with --endpoint-url for the local runtime)."""
    ctx.obj = Target(
        stack=stack,
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint_url,
        profile=profile,
        region=region,
    )


@contextmanager
def connected(ctx: typer.Context, tables: list[str] | None = None) -> Iterator[Operator]:
    """The Operator on the deployment the app's options name; AWS and bad-input errors become
    exit codes."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ops.deployment import TargetError, connect

    try:
        yield connect(ctx.ensure_object(Target), tuple(_split_tables(tables)))
    except TargetError as exc:
        err_console.print(f"error: {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except (ClientError, BotoCoreError) as exc:
        err_console.print(f"error: AWS: {exc}", highlight=False)
        raise typer.Exit(EXIT_FAILURE) from None


@app.command()
def validate(
    table: Annotated[str, typer.Argument(help="Table name from the registry, e.g. staff.")],
    files: Annotated[
        list[Path], typer.Argument(help="JSON array or JSON Lines files.", exists=True)
    ],
) -> None:
    """Validate files of rows against a table's schema; exit 1 when any row fails."""
    if table not in TABLES:
        err_console.print(f"unknown table {table!r}; known: {', '.join(sorted(TABLES))}")
        raise typer.Exit(2)
    spec = get_table(table)
    failed = False
    for path in files:
        try:
            raw = decode_rows(path.read_bytes(), str(path), allow_json_lines=True)
        except FileFormatError as exc:
            err_console.print(f"[red]✗[/] {escape(str(exc))}")  # a file's text is not markup
            failed = True
            continue
        report = validate_rows(spec, raw, str(path))
        for problem in report.problems:
            console.print(f"[red]✗[/] {escape(str(problem))}", markup=True, highlight=False)
        bad_rows = len({p.row_index for p in report.problems})
        mark = "[green]✓[/]" if report.ok else "[red]✗[/]"
        console.print(
            f"{mark} {escape(str(path))}: {report.rows_read} rows, "
            f"{report.rows_read - bad_rows} valid, "
            f"{bad_rows} invalid",
            highlight=False,
        )
        failed = failed or not report.ok
    raise typer.Exit(1 if failed else 0)


@app.command()
def sample(
    out: Annotated[Path, typer.Option(help="Folder to write <table>.json files into.")],
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
    orders: Annotated[int, typer.Option(help="Orders to create before the baseline.")] = 40,
) -> None:
    """Write a deterministic sample baseline of every table (generated, not copied)."""
    database = SampleDatabase(seed, orders=orders)
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in TABLES.items():
        report = validate_rows(spec, database.rows(name), f"sample:{name}")
        if not report.ok:  # the generator is ours: a failure here is a bug, say so loudly
            raise RuntimeError("\n".join(str(p) for p in report.problems))
        (out / f"{name}.json").write_bytes(dump_rows(spec, report.rows))
        console.print(f"wrote {out / f'{name}.json'} ({len(report.rows)} rows)", highlight=False)


@app.command("ingest-now")
def ingest_now(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Option(help="postgresql://user:pass@host:port/db (default: $SOURCE_URL)."),
    ] = None,
) -> None:
    """Run one ingest now: every registry table into baseline/ or staging/ of the bucket."""
    from ops.deployment import process_environment
    from ops.local.runtime import aws_environment
    from services.ingest.app import run_with_settings
    from services.ingest.settings import IngestSettings, SettingsError

    with connected(ctx) as operator:
        try:
            settings = IngestSettings.from_env(
                source_url=source,
                bucket_name=operator.bucket,
                event_bus_name=operator.event_bus,
                schedule_rule_name=operator.schedule_rule,
            )
        except SettingsError as exc:
            err_console.print(str(exc))
            raise typer.Exit(EXIT_USAGE) from None
        with aws_environment(process_environment(ctx.ensure_object(Target))):
            report = run_with_settings(settings)
    if report.paused:
        console.print(f"paused, nothing read: {report.paused}", highlight=False)
        raise typer.Exit(0)
    for table in report.tables:
        if table.action == "failed":
            err_console.print(f"[red]✗[/] {table.error}", highlight=False)
        else:
            console.print(
                f"[green]✓[/] {table.table}: {table.action} {table.key} "
                f"({table.rows_written} of {table.rows_read} rows read)",
                highlight=False,
            )
    raise typer.Exit(0 if report.ok else EXIT_FAILURE)


local_app = typer.Typer(
    help="Run the whole chain on this machine: moto's server plays AWS.", no_args_is_help=True
)
app.add_typer(local_app, name="local")


@local_app.command("up")
def local_up(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the local AWS endpoint.")] = 4566,
    bucket: Annotated[str, typer.Option(help="Name of the ingest bucket.")] = "ingest-local",
    tables: Annotated[
        list[str] | None, typer.Option(help="Tables to run (repeat or comma-separate); all.")
    ] = None,
    visibility_timeout: Annotated[
        int, typer.Option(help="Seconds a failed message stays hidden before its retry.")
    ] = 2,
    log_dir: Annotated[Path, typer.Option(help="Where the functions' own logs go.")] = Path(
        ".local/logs"
    ),
    verbose: Annotated[bool, typer.Option(help="Show moto's request log.")] = False,
    merge_handler: Annotated[
        str, typer.Option(help="module:function of the merge Lambda.", hidden=True)
    ] = DEFAULT_HANDLERS["merge"],
    pause_handler: Annotated[
        str, typer.Option(help="module:function of the pause Lambda.", hidden=True)
    ] = DEFAULT_HANDLERS["pause"],
    source: Annotated[
        str | None,
        typer.Option(help="Source database (postgresql://USER:PASS@HOST:PORT/DB) to ingest."),
    ] = None,
    ingest_every: Annotated[
        float, typer.Option(help="Seconds between ingest runs (the schedule's rate).")
    ] = 1200.0,
    transform_handler: Annotated[
        str, typer.Option(help="module:function of the transform Lambda.", hidden=True)
    ] = DEFAULT_HANDLERS["transform"],
    warehouse_dsn: Annotated[
        str | None,
        typer.Option(help="postgresql://... warehouse the transform also upserts into."),
    ] = None,
) -> None:
    """Start the local AWS endpoint, create the resources and run the dispatcher until Ctrl-C.

    With --source, the ingest schedule runs too: the first ingest at once, then every
    --ingest-every seconds while the schedule rule is enabled.
    """
    from ops.local.cli_support import run_up

    raise typer.Exit(
        run_up(
            host=host,
            port=port,
            bucket=bucket,
            tables=_split_tables(tables),
            visibility_timeout=visibility_timeout,
            log_dir=log_dir,
            verbose=verbose,
            handlers={
                **DEFAULT_HANDLERS,
                "merge": merge_handler,
                "pause": pause_handler,
                "transform": transform_handler,
            },
            source=source,
            ingest_every=ingest_every,
            warehouse_dsn=warehouse_dsn,
        )
    )


@local_app.command("demo")
def local_demo(
    seed: Annotated[int, typer.Option(help="Seed of the sample database.")] = 7,
) -> None:
    """Tell the whole story on a private local endpoint: baseline, cycles, a bad file, recovery."""
    from ops.local.demo import run_demo

    raise typer.Exit(run_demo(console, seed=seed))


transform_app = typer.Typer(
    help="The star-schema warehouse the transform keeps under warehouse/.", no_args_is_help=True
)
app.add_typer(transform_app, name="transform")


@transform_app.command("rebuild")
def transform_rebuild(
    ctx: typer.Context,
    warehouse_dsn: Annotated[
        str | None,
        typer.Option(help="postgresql://... warehouse to replace with the same rows."),
    ] = None,
) -> None:
    """Rebuild every warehouse table from latest + history (same output as the events gave)."""
    from services.transform.service import TransformService

    sink = None
    if warehouse_dsn:
        from services.transform.postgres import PostgresWarehouse

        sink = PostgresWarehouse.from_url(warehouse_dsn)
    with connected(ctx) as operator:
        report = TransformService(operator.store, sink=sink).rebuild()
    for table, rows in sorted(report.tables.items()):
        console.print(f"[green]✓[/] {table}: {rows} rows", highlight=False)
    console.print(f"{len(report.files_written)} file(s) written", highlight=False)


def _split_tables(tables: list[str] | None) -> list[str]:
    names = [name for item in tables or [] for name in item.split(",") if name]
    unknown = [name for name in names if name not in TABLES]
    if unknown:
        raise typer.BadParameter(f"unknown tables {unknown}; known: {', '.join(sorted(TABLES))}")
    return names or list(TABLES)


# -- operator commands: the same code against a stack on AWS or the local runtime ------------
TablesOption = Annotated[
    list[str] | None, typer.Option("--table", help="Table (repeat or comma-separate); all.")
]


@app.command()
def status(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    table: TablesOption = None,
) -> None:
    """Per table: latest, last merge, staging, DLQ, quarantine, history; and the pause.

    Exit 3 when paused, a DLQ holds messages or a quarantined file is neither merged nor
    dismissed."""
    from ops import render
    from ops.status import collect_status

    with connected(ctx, table) as operator:
        report = collect_status(operator)
    if json_output:
        print(report.model_dump_json(indent=2))
    else:
        render.status(console, report)
    raise typer.Exit(0 if report.healthy else EXIT_UNHEALTHY)


@app.command()
def pause(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="Why (kept in _state/pause.json).")] = "by operator",
) -> None:
    """Disable the ingest schedule and record why (merges keep running)."""
    with connected(ctx) as operator:
        outcome = operator.pause(reason)
    state = "paused" if outcome.changed else "already paused for this reason"
    console.print(f"{state}: schedule rule {operator.schedule_rule} disabled", highlight=False)


@app.command()
def resume(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option(help="Resume even while a DLQ holds messages.")] = False,
    table: TablesOption = None,
) -> None:
    """Enable the ingest schedule again (refused while a DLQ holds messages).

    Only the DLQs of --table (default all) are checked; --force resumes anyway."""
    from ops.operations import ResumeRefusedError

    with connected(ctx, table) as operator:
        try:
            operator.resume(force=force)
        except ResumeRefusedError as exc:
            err_console.print(f"refused: {exc}", highlight=False)
            raise typer.Exit(EXIT_FAILURE) from None
    console.print(f"resumed: schedule rule {operator.schedule_rule} enabled", highlight=False)


@app.command()
def redrive(
    ctx: typer.Context,
    table: TablesOption = None,
    dry_run: Annotated[bool, typer.Option(help="Only say what would move.")] = False,
) -> None:
    """Move DLQ messages back to their queues, where the merge takes them again."""
    from ops import render

    with connected(ctx, table) as operator:
        if dry_run:
            render.redrive_plan(console, operator.dlq_depths())
        else:
            render.redrive(console, operator.redrive())


@app.command()
def dismiss(
    ctx: typer.Context,
    table: Annotated[str, typer.Option(help="The table whose quarantined batches to dismiss.")],
    batch: Annotated[
        list[str] | None, typer.Option(help="Only these batches (repeat); default all.")
    ] = None,
    reason: Annotated[
        str, typer.Option(help="Why (kept in the record).")
    ] = "corrected file staged",
    by: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
) -> None:
    """Drop a table's DLQ messages of quarantined batches (files kept, record under _state/)."""
    import getpass
    from datetime import UTC, datetime

    from ops.dismissal import dismiss as dismiss_batches
    from ops.dismissal import dismissal_key

    with connected(ctx, [table]) as operator:
        result = dismiss_batches(
            operator,
            table,
            batches=set(batch) if batch else None,
            reason=reason,
            by=by or getpass.getuser(),
            now=datetime.now(UTC),
        )
    for record in result.dismissed:
        console.print(
            f"{table}: dismissed batch {record.batch} (kept {record.quarantine_key}); "
            f"record {dismissal_key(table, record.batch)}",
            highlight=False,
        )
    console.print(
        f"{len(result.dismissed)} dismissed, {result.kept} other message(s) left in the DLQ",
        highlight=False,
    )
    if batch and not result.dismissed:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def replay(
    ctx: typer.Context,
    table: Annotated[str, typer.Option(help="The table.")],
    archive: Annotated[str, typer.Option(help="Key of the archived file, under archive/<t>/.")],
) -> None:
    """Stage an archived file again (a no-op merge unless latest lost it): recovery drills."""
    from ops.dismissal import ReplayError
    from ops.dismissal import replay as replay_archive

    with connected(ctx, [table]) as operator:
        try:
            written = replay_archive(operator.store, table, archive)
        except ReplayError as exc:
            err_console.print(f"error: {exc}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
    console.print(f"staged {archive} as {written.key} (version {written.version_id})")


@app.command()
def history(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="Table name.")],
    key: Annotated[int, typer.Argument(help="Primary key of the row.")],
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """The version timeline of one row, from latest + history.

    In observation order: each version with its operation, valid from its observation (UTC)
    to the next one's or its delete; latest's row is current."""
    import json

    from ops import render
    from ops.inspection import row_history

    with connected(ctx, [table]) as operator:
        versions = row_history(
            operator.store, effective_spec(operator.store, get_table(table)), key
        )
    if not versions:
        err_console.print(f"{table} has no row with key {key}", highlight=False)
        raise typer.Exit(EXIT_FAILURE)
    if json_output:
        document = [
            {
                "valid_from": v.valid_from.isoformat(),
                "valid_to": v.valid_to.isoformat() if v.valid_to else None,
                "row": dict(v.row),
                "observed": v.observed.text if v.observed else None,
                "op": v.op,
                "deleted_at": v.deleted_at.isoformat() if v.deleted_at else None,
            }
            for v in versions
        ]
        print(json.dumps(document, indent=2))
    else:
        render.versions(console, versions)


@app.command()
def asof(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="Table name.")],
    at: Annotated[datetime, typer.Option(help="The time (UTC), e.g. 2024-11-03T14:20:00.")],
    out: Annotated[Path | None, typer.Option(help="Write the rows here (default stdout).")] = None,
) -> None:
    """The table as it stood at a time (UTC), rebuilt from latest + history.

    A file of rows: per key, the last version observed by then."""
    from ops.inspection import table_as_of

    with connected(ctx, [table]) as operator:
        data = table_as_of(operator.store, effective_spec(operator.store, get_table(table)), at)
    if out is None:
        sys.stdout.write(data.decode())
    else:
        out.write_bytes(data)
        err_console.print(f"wrote {out}", highlight=False)


@app.command()
def query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="DuckDB SQL over the tables Athena sees.")],
    json_output: Annotated[bool, typer.Option("--json", help="A JSON array for scripts.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="CSV with a header line.")] = False,
    snapshot: Annotated[
        Path | None,
        typer.Option(
            help="Read a folder the demo left (.demo/bucket), not a deployment.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
) -> None:
    """SQL over the bucket: the warehouse and change tables as Glue names them, latest_<table>.

    DuckDB reads only the tables the SQL names. Exit 1 on an AWS error, 2 on bad SQL."""
    from ops import render
    from ops.query import QueryError, as_csv, as_json, run_query

    if json_output and csv_output:
        raise typer.BadParameter("choose one of --json and --csv")
    with _query_store(ctx, snapshot) as store:
        try:
            result = run_query(store, sql)
        except QueryError as exc:
            err_console.print(f"error: {escape(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
    if json_output or csv_output:
        sys.stdout.write(as_json(result) + "\n" if json_output else as_csv(result))
    else:
        render.query_result(console, result)


@contextmanager
def _query_store(ctx: typer.Context, snapshot: Path | None) -> Iterator[ObjectStore]:
    """The snapshot folder, or the deployment's bucket (its errors as `connected` gives them)."""
    if snapshot is not None:
        from ops.folder_store import FolderStore

        yield FolderStore(snapshot, bucket=snapshot.name)
        return
    with connected(ctx) as operator:
        yield operator.store


if __name__ == "__main__":
    app()
