"""`ingestctl local up`: the runtime in the foreground, one line per outcome on stdout."""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from ops.local.dispatcher import DispatcherConfig, Outcome
from ops.local.functions import FunctionStartError, HandlerImportError
from ops.local.moto_edge import install as install_moto_edge
from ops.local.report import outcome_lines
from ops.local.runtime import LocalRuntime, PortInUseError

# One line at a time on stdout: `print` writes the text and its newline separately, so two
# threads printing at once could join their lines (the dispatcher's outcomes and "ready").
_STDOUT = threading.Lock()


def _say(line: str) -> None:
    with _STDOUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _print_outcome(outcome: Outcome) -> None:
    for line in outcome_lines(outcome):
        _say(line)


# Seconds a stop may take before the runtime prints its threads' stacks on stderr.
STOP_REPORT_SECONDS = 15.0
# How often the main thread wakes to run a signal handler another thread's signal left it.
WAKE_SECONDS = 0.5


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_up(
    *,
    host: str,
    port: int,
    bucket: str,
    tables: list[str],
    visibility_timeout: int,
    log_dir: Path,
    verbose: bool,
    handlers: Mapping[str, str],
    source: str | None = None,
    ingest_every: float = 1200.0,
    warehouse_dsn: str | None = None,
) -> int:
    # Stop cleanly on Ctrl-C and when a supervisor terminates us (SIGINT explicitly too: a
    # shell's background job starts with SIGINT ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    # A runtime that will not stop can be asked where it is stuck: SIGABRT prints every
    # thread's stack on stderr (the e2e helper does so before it kills one).
    faulthandler.enable()
    install_moto_edge()  # this process exists for the runtime: moto stays AWS-like for good
    runtime = LocalRuntime(
        _print_outcome,
        host=host,
        port=port,
        bucket=bucket,
        tables=tables,
        config=DispatcherConfig(
            visibility_timeout=visibility_timeout,
            log_dir=None if verbose else log_dir,
            ingest_source=source,
            ingest_every_seconds=ingest_every,
        ),
        verbose=verbose,
        handlers=handlers,
        warehouse_dsn=warehouse_dsn,
    )
    try:
        runtime.start()
    except HandlerImportError as exc:
        print(f"error: a Lambda handler is missing: {exc}", file=sys.stderr, flush=True)
        return 3
    except FunctionStartError as exc:
        print(f"error: a Lambda function did not start: {exc}", file=sys.stderr, flush=True)
        return 3
    except PortInUseError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    _say(f"ready endpoint={runtime.endpoint_url} bucket={bucket}")
    try:
        # A timed wait, not a bare one: a process's signal may be taken by any of its threads,
        # and Python runs the handler in the main thread only once it is back in the
        # interpreter, which a wait without a timeout may never be (a SIGTERM then went
        # unheard until the supervisor's SIGABRT).
        forever = threading.Event()
        while not forever.wait(WAKE_SECONDS):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        # A stop should take seconds; one that takes longer prints where every thread is,
        # while they are all still there to print (before the interpreter's own shutdown).
        faulthandler.dump_traceback_later(STOP_REPORT_SECONDS)
        runtime.stop()
    return 0
