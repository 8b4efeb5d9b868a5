"""`ingestctl`: the operator CLI."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ops.local.functions import DEFAULT_HANDLERS
from ops.sample_data import SampleDatabase
from shared import naming
from shared.rows import FileFormatError, decode_rows, dump_rows, validate_rows
from shared.schema_state import effective_spec
from shared.tables import TABLES, get_table

if TYPE_CHECKING:
    from ops.operations import Operator

app = typer.Typer(
    name="ingestctl",
    help="Operate the ingest bucket: validate files, run it locally, inspect and repair it.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


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
    source: Annotated[
        str | None,
        typer.Option(help="postgresql://user:pass@host:port/db (default: $SOURCE_URL)."),
    ] = None,
    bucket: Annotated[
        str | None, typer.Option(help="The ingest bucket (default: $BUCKET_NAME).")
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(help="AWS endpoint, e.g. the local runtime's http://127.0.0.1:PORT."),
    ] = None,
) -> None:
    """Run one ingest now: every registry table into baseline/ or staging/ of the bucket."""
    import os
    from contextlib import nullcontext

    from ops.local.runtime import aws_environment, endpoint_environment
    from services.ingest.app import run_with_settings
    from services.ingest.settings import IngestSettings, SettingsError

    overrides = {"SOURCE_URL": source, "BUCKET_NAME": bucket}
    environ = {**os.environ, **{k: v for k, v in overrides.items() if v}}
    try:
        settings = IngestSettings.from_env(environ)
    except SettingsError as exc:
        err_console.print(str(exc))
        raise typer.Exit(2) from None
    # boto3 reads AWS_ENDPOINT_URL itself; moto's server takes any credentials.
    pointed = aws_environment(endpoint_environment(endpoint_url)) if endpoint_url else nullcontext()
    with pointed:
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
    raise typer.Exit(0 if report.ok else 1)


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
    bucket: Annotated[
        str | None, typer.Option(help="The ingest bucket (default: $BUCKET_NAME).")
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(help="AWS endpoint, e.g. the local runtime's http://127.0.0.1:PORT."),
    ] = None,
    warehouse_dsn: Annotated[
        str | None,
        typer.Option(help="postgresql://... warehouse to replace with the same rows."),
    ] = None,
) -> None:
    """Rebuild every warehouse table from latest + history (same output as the events gave)."""
    import os
    from contextlib import nullcontext

    from ops.local.runtime import aws_environment, endpoint_environment
    from services.transform.service import TransformService
    from shared.storage import BucketStore

    name = bucket or os.environ.get("BUCKET_NAME")
    if not name:
        err_console.print("name the bucket: --bucket or $BUCKET_NAME")
        raise typer.Exit(2)
    sink = None
    if warehouse_dsn:
        from services.transform.postgres import PostgresWarehouse

        sink = PostgresWarehouse.from_url(warehouse_dsn)
    pointed = aws_environment(endpoint_environment(endpoint_url)) if endpoint_url else nullcontext()
    with pointed:
        report = TransformService(BucketStore(name), sink=sink).rebuild()
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
# Exit codes: 0 ok, 1 failure, 2 usage (or no such deployment), 3 `status`: paused or unhealthy.
EXIT_FAILURE, EXIT_USAGE, EXIT_UNHEALTHY = 1, 2, 3

StackOption = Annotated[
    str | None,
    typer.Option(help="CloudFormation stack: resources from its outputs.", envvar="INGEST_STACK"),
]
BucketOption = Annotated[
    str | None,
    typer.Option(
        help="The ingest bucket (no stack: other names from naming).", envvar="BUCKET_NAME"
    ),
]
EndpointOption = Annotated[
    str | None,
    typer.Option(help="AWS endpoint, e.g. the local runtime's http://127.0.0.1:4566."),
]
ProfileOption = Annotated[str | None, typer.Option(help="AWS CLI profile.")]
RegionOption = Annotated[str | None, typer.Option(help="AWS region.")]
PrefixOption = Annotated[str, typer.Option(help="Resource name prefix (no stack).")]
TablesOption = Annotated[
    list[str] | None, typer.Option("--table", help="Table (repeat or comma-separate); all.")
]


@contextmanager
def _operator(
    stack: str | None,
    bucket: str | None,
    endpoint_url: str | None,
    profile: str | None,
    region: str | None,
    prefix: str,
    tables: list[str] | None = None,
) -> Iterator[Operator]:
    """The Operator on the named deployment; AWS and bad-input errors become exit codes."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ops.deployment import Target, TargetError, connect

    target = Target(
        stack=stack,
        bucket=bucket,
        endpoint_url=endpoint_url,
        profile=profile,
        region=region,
        prefix=prefix,
    )
    try:
        yield connect(target, tuple(_split_tables(tables)))
    except TargetError as exc:
        err_console.print(f"error: {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except (ClientError, BotoCoreError) as exc:
        err_console.print(f"error: AWS: {exc}", highlight=False)
        raise typer.Exit(EXIT_FAILURE) from None


@app.command()
def status(
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    table: TablesOption = None,
    stack: StackOption = None,
    bucket: BucketOption = None,
    endpoint_url: EndpointOption = None,
    profile: ProfileOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = naming.DEFAULT_PREFIX,
) -> None:
    """Per table: latest, last merge, staging, DLQ, quarantine, history; and the pause.
    Exit 3 when paused, a DLQ holds messages or a quarantined file is neither merged nor
    dismissed."""
    from ops import render
    from ops.status import collect_status

    with _operator(stack, bucket, endpoint_url, profile, region, prefix, table) as operator:
        report = collect_status(operator)
    if json_output:
        print(report.model_dump_json(indent=2))
    else:
        render.status(console, report)
    raise typer.Exit(0 if report.healthy else EXIT_UNHEALTHY)


@app.command()
def pause(
    reason: Annotated[str, typer.Option(help="Why (kept in _state/pause.json).")] = "by operator",
    stack: StackOption = None,
    bucket: BucketOption = None,
    endpoint_url: EndpointOption = None,
    profile: ProfileOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = naming.DEFAULT_PREFIX,
) -> None:
    """Disable the ingest schedule and record why (merges keep running)."""
    with _operator(stack, bucket, endpoint_url, profile, region, prefix) as operator:
        outcome = operator.pause(reason)
    state = "paused" if outcome.changed else "already paused for this reason"
    console.print(f"{state}: schedule rule {operator.schedule_rule} disabled", highlight=False)


@app.command()
def resume(
    force: Annotated[bool, typer.Option(help="Resume even while a DLQ holds messages.")] = False,
    table: TablesOption = None,
    stack: StackOption = None,
    bucket: BucketOption = None,
    endpoint_url: EndpointOption = None,
    profile: ProfileOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = naming.DEFAULT_PREFIX,
) -> None:
    """Enable the ingest schedule again; refused while a DLQ (of --table, default all) holds
    messages unless --force."""
    from ops.operations import ResumeRefusedError

    with _operator(stack, bucket, endpoint_url, profile, region, prefix, table) as operator:
        try:
            operator.resume(force=force)
        except ResumeRefusedError as exc:
            err_console.print(f"refused: {exc}", highlight=False)
            raise typer.Exit(EXIT_FAILURE) from None
    console.print(f"resumed: schedule rule {operator.schedule_rule} enabled", highlight=False)


@app.command()
def redrive(
    table: TablesOption = None,
    dry_run: Annotated[bool, typer.Option(help="Only say what would move.")] = False,
    stack: StackOption = None,
    bucket: BucketOption = None,
    endpoint_url: EndpointOption = None,
    profile: ProfileOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = naming.DEFAULT_PREFIX,
) -> None:
    """Move DLQ messages back to their queues, where the merge takes them again."""
    from ops import render

    with _operator(stack, bucket, endpoint_url, profile, region, prefix, table) as operator:
        if dry_run:
            render.redrive_plan(console, operator.dlq_depths())
        else:
            render.redrive(console, operator.redrive())


@app.command()
def dismiss(
    table: Annotated[str, typer.Option(help="The table whose quarantined batches to dismiss.")],
    batch: Annotated[
        list[str] | None, typer.Option(help="Only these batches (repeat); default all.")
    ] = None,
    reason: Annotated[
        str, typer.Option(help="Why (kept in the record).")
    ] = "corrected file staged",
    by: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
    stack: StackOption = None,
    bucket: BucketOption = None,
    endpoint_url: EndpointOption = None,
    profile: ProfileOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = naming.DEFAULT_PREFIX,
) -> None:
    """Drop a table's DLQ messages of quarantined batches (files kept, record under _state/)."""
    import getpass
    from datetime import UTC, datetime

    from ops.dismissal import dismiss as dismiss_batches
    from ops.dismissal import dismissal_key

    with _operator(stack, bucket, endpoint_url, profile, region, prefix, [table]) as operator:
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
    table: Annotated[str, typer.Option(help="The table.")],
    archive: Annotated[str, typer.Option(help="Key of the archived file, under archive/<t>/.")],
    stack: StackOption = None,
    bucket: BucketOption = None,
    endpoint_url: EndpointOption = None,
    profile: ProfileOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = naming.DEFAULT_PREFIX,
) -> None:
    """Stage an archived file again (a no-op merge unless latest lost it): recovery drills."""
    from ops.dismissal import ReplayError
    from ops.dismissal import replay as replay_archive

    with _operator(stack, bucket, endpoint_url, profile, region, prefix, [table]) as operator:
        try:
            written = replay_archive(operator.store, table, archive)
        except ReplayError as exc:
            err_console.print(f"error: {exc}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
    console.print(f"staged {archive} as {written.key} (version {written.version_id})")


@app.command()
def history(
    table: Annotated[str, typer.Argument(help="Table name.")],
    key: Annotated[int, typer.Argument(help="Primary key of the row.")],
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    stack: StackOption = None,
    bucket: BucketOption = None,
    endpoint_url: EndpointOption = None,
    profile: ProfileOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = naming.DEFAULT_PREFIX,
) -> None:
    """The version timeline of one row from latest + history, in observation order: each
    version with its operation, valid from its observation (UTC) to the next one's or its
    delete; latest's row is current."""
    import json

    from ops import render
    from ops.inspection import row_history

    with _operator(stack, bucket, endpoint_url, profile, region, prefix, [table]) as operator:
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
    table: Annotated[str, typer.Argument(help="Table name.")],
    at: Annotated[datetime, typer.Option(help="The time (UTC), e.g. 2024-11-03T14:20:00.")],
    out: Annotated[Path | None, typer.Option(help="Write the rows here (default stdout).")] = None,
    stack: StackOption = None,
    bucket: BucketOption = None,
    endpoint_url: EndpointOption = None,
    profile: ProfileOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = naming.DEFAULT_PREFIX,
) -> None:
    """The table as it stood at a time (UTC), rebuilt from latest + history (a file of rows):
    per key, the last version observed by then."""
    from ops.inspection import table_as_of

    with _operator(stack, bucket, endpoint_url, profile, region, prefix, [table]) as operator:
        data = table_as_of(operator.store, effective_spec(operator.store, get_table(table)), at)
    if out is None:
        sys.stdout.write(data.decode())
    else:
        out.write_bytes(data)
        err_console.print(f"wrote {out}", highlight=False)


if __name__ == "__main__":
    app()
