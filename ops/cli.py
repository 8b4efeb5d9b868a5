"""`ingestctl`: the operator CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ops.local.functions import DEFAULT_HANDLERS
from ops.sample_data import SampleDatabase
from shared.rows import FileFormatError, decode_rows, dump_rows, validate_rows
from shared.tables import TABLES, get_table

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
            err_console.print(f"[red]✗[/] {exc}")
            failed = True
            continue
        report = validate_rows(spec, raw, str(path))
        for problem in report.problems:
            console.print(f"[red]✗[/] {problem}", markup=True, highlight=False)
        bad_rows = len({p.row_index for p in report.problems})
        mark = "[green]✓[/]" if report.ok else "[red]✗[/]"
        console.print(
            f"{mark} {path}: {report.rows_read} rows, {report.rows_read - bad_rows} valid, "
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
    transform_handler: Annotated[
        str, typer.Option(help="module:function of the transform Lambda.", hidden=True)
    ] = DEFAULT_HANDLERS["transform"],
    warehouse_dsn: Annotated[
        str | None,
        typer.Option(help="postgresql://... warehouse the transform also upserts into."),
    ] = None,
) -> None:
    """Start the local AWS endpoint, create the resources and run the dispatcher until Ctrl-C."""
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
                "merge": merge_handler,
                "pause": pause_handler,
                "transform": transform_handler,
            },
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


if __name__ == "__main__":
    app()
