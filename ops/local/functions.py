"""Lambda functions on one machine: a handler found by import path, run in its own process.

Why a process per function: on AWS each function has its own environment (TABLE_NAME,
DLQ_URL differ per table) and its own module state (cached settings, clients, Powertools
objects). Swapping `os.environ` under a lock in one process would need every handler to
forget its caches between calls. A process per function gives each table's handler exactly
what Lambda gives it, with no cooperation from the handler. The processes are forked from a
`forkserver` that has already imported the handlers, so starting eleven of them is cheap, and
their stdout/stderr (Powertools JSON logs, EMF metrics) go to a log file, not the console.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ops.local.resources import Deployment
from services.ingest.settings import DEFAULT_OVERLAP_SECONDS, IngestSettings
from services.merge.settings import MergeSettings
from services.pause.models import PauseSettings
from services.transform.settings import TransformSettings
from shared import deployment_facts as facts
from shared import naming

# The seam the integrator wires: function kind -> "module:function" (the stack's handlers by
# default). The dispatcher resolves these when it starts, so a missing handler is reported
# once, clearly, before anything runs.
DEFAULT_HANDLERS: Mapping[str, str] = {
    kind: function.local_handler for kind, function in facts.FUNCTIONS.items()
}
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

Handler = Callable[[dict[str, Any], Any], Any]


class HandlerImportError(Exception):
    """A handler path that does not resolve to a callable."""


class FunctionStartError(Exception):
    """A function process that did not come up (its handler failed to import, or it died)."""


def resolve_handler(path: str) -> Handler:
    """`"package.module:function"` -> the function, or a `HandlerImportError` that says why."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise HandlerImportError(f"handler path {path!r} is not 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise HandlerImportError(
            f"cannot import {module_name!r} for {path!r}: {type(exc).__name__}: {exc}"
        ) from None
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise HandlerImportError(f"{module_name!r} has no callable {attribute!r}")
    return handler  # type: ignore[no-any-return]


@dataclass
class LocalContext:
    """The parts of Lambda's context object handlers and Powertools read."""

    function_name: str
    timeout_seconds: float
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    invoked_function_arn: str = ""
    _deadline: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class InvokeResult:
    """What an invocation gave back: the handler's return value, or the error that escaped it."""

    response: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    handler: str
    environment: Mapping[str, str]
    timeout_seconds: float
    memory_mb: int = 512


def endpoint_environment(endpoint_url: str, region: str) -> dict[str, str]:
    """What boto3 needs to reach a local endpoint: its URL, a region, dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        **LOCAL_CREDENTIALS,
    }


def local_environment(endpoint_url: str, region: str) -> dict[str, str]:
    """The variables every local function has besides the stack's: the endpoint, dummy
    credentials and the region (Lambda's own, on AWS), and no X-Ray."""
    return endpoint_environment(endpoint_url, region) | {"POWERTOOLS_TRACE_DISABLED": "true"}


@dataclass(frozen=True)
class IngestSource:
    """What the local ingest reads: a postgresql:// URL (on AWS: a secret and parameters)."""

    url: str
    overlap_seconds: int = DEFAULT_OVERLAP_SECONDS
    log_tables: tuple[str, ...] = ()


def function_specs(
    deployment: Deployment,
    endpoint_url: str,
    handlers: Mapping[str, str] = DEFAULT_HANDLERS,
    *,
    ingest: IngestSource | None = None,
    warehouse_dsn: str | None = None,
) -> list[FunctionSpec]:
    """The deployment's functions as the stack declares them (shared/deployment_facts.py),
    each with the variables of its settings model: a merge per table and the pause; the
    ingest with a source to read; the transform when a `transform` handler is given."""
    base = local_environment(endpoint_url, deployment.region)

    def spec(name: str, function: facts.FunctionFacts, settings: dict[str, str]) -> FunctionSpec:
        return FunctionSpec(
            name=name,
            handler=handlers[function.service],
            environment=base | function.service_environment() | settings,
            timeout_seconds=function.timeout_seconds,
            memory_mb=function.memory_mb,
        )

    shared = {"bucket_name": deployment.bucket, "event_bus_name": deployment.event_bus}
    prefix = deployment.prefix
    specs = [
        spec(
            res.function_name,
            facts.MERGE,
            MergeSettings.environment(**shared, table_name=res.table, dlq_url=res.dlq.url),
        )
        for res in deployment.tables.values()
    ]
    rule = deployment.schedule_rule
    pause_env = PauseSettings.environment(**shared, schedule_rule_name=rule)
    specs.append(spec(naming.pause_function_name(prefix), facts.PAUSE, pause_env))
    if ingest is not None:
        ingest_env = IngestSettings.environment(
            **shared,
            source_url=ingest.url,
            schedule_rule_name=rule,
            overlap_seconds=ingest.overlap_seconds,
            log_capture_tables=",".join(ingest.log_tables),
        )
        specs.append(spec(naming.ingest_function_name(prefix), facts.INGEST, ingest_env))
    if facts.TRANSFORM.service in handlers:
        transform_env = TransformSettings.environment(**shared, warehouse_dsn=warehouse_dsn)
        specs.append(spec(naming.transform_function_name(prefix), facts.TRANSFORM, transform_env))
    return specs


class FunctionProcess:
    """One function: a child process that runs its handler for each event sent to it."""

    def __init__(self, spec: FunctionSpec, log_path: Path | None) -> None:
        self.spec = spec
        self.log_path = log_path
        self._lock = threading.Lock()  # one invocation at a time, like one Lambda instance
        # Guards the process and `_closed`; never held while waiting, so `close()` (which must
        # not wait for an invocation) can take it. Without it an invocation that found its
        # process gone could start a new one just after `close()`: a process left running.
        self._state = threading.Lock()
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._closed = False  # closed for good: the runtime is stopping, nothing restarts it

    def start(self) -> None:
        with self._state:
            if self._closed:
                raise FunctionStartError(f"{self.spec.name} is shut down")
            context = multiprocessing.get_context("forkserver")
            parent, child = context.Pipe()
            log = str(self.log_path) if self.log_path else None
            self._process = context.Process(
                target=_serve,
                args=(self.spec, log, child),
                name=self.spec.name,
                daemon=True,
            )
            self._process.start()
            child.close()
            self._conn = parent

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the process has its environment and has imported its handler."""
        conn = self._conn  # `close()` from another thread may clear the attribute
        if conn is None:
            raise FunctionStartError(f"{self.spec.name} is shut down")
        try:
            if not conn.poll(timeout):
                raise FunctionStartError(f"{self.spec.name} did not start in {timeout:.0f}s")
            kind, detail = conn.recv()
        except (EOFError, OSError) as exc:
            raise FunctionStartError(f"{self.spec.name} died while starting: {exc!r}") from None
        if kind != "ready":
            raise FunctionStartError(f"{self.spec.name} could not start: {detail}")

    def invoke(self, event: dict[str, Any]) -> InvokeResult:
        with self._lock:
            if self._closed:
                return InvokeResult(error=f"{self.spec.name} is shut down")
            if self._conn is None or self._process is None or not self._process.is_alive():
                self.stop()
                try:
                    self.start()
                    self.wait_ready()
                except FunctionStartError as exc:
                    self.stop()
                    return InvokeResult(error=str(exc))
            conn = self._conn  # `close()` from another thread may clear the attribute
            if conn is None:
                return InvokeResult(error=f"{self.spec.name} is shut down")
            try:
                conn.send(event)
                if not conn.poll(self.spec.timeout_seconds + 1):
                    self.stop()  # like Lambda: a timed-out instance is thrown away
                    return InvokeResult(error=f"timed out after {self.spec.timeout_seconds}s")
                kind, value = conn.recv()
            except (EOFError, OSError) as exc:
                self.stop()
                return InvokeResult(error=f"function process died: {exc!r}")
            return InvokeResult(response=value) if kind == "ok" else InvokeResult(error=value)

    def stop(self) -> None:
        # The process first: its end of the pipe closing is what wakes an invocation waiting
        # on it in another thread (closing our end under a waiting poll() wakes nothing).
        with self._state:
            process, self._process = self._process, None
            conn, self._conn = self._conn, None
        if process is not None:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Stop for good, even with an invocation in flight (it returns an error)."""
        with self._state:
            self._closed = True
        self.stop()


def preload(handler_paths: list[str]) -> None:
    """Import the handlers' modules once in the forkserver, before the first function starts."""
    modules = ["boto3", *(path.partition(":")[0] for path in handler_paths)]
    multiprocessing.get_context("forkserver").set_forkserver_preload(modules)


def _serve(spec: FunctionSpec, log_path: str | None, conn: Connection) -> None:
    """The function process: its own environment, then one handler call per event received."""
    import signal
    import time

    # Ctrl-C reaches the whole process group: the runtime stops its functions itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    os.environ.update(spec.environment)
    try:
        handler = resolve_handler(spec.handler)
    except HandlerImportError as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", None))
    while True:
        try:
            event = conn.recv()
        except (EOFError, OSError):
            return
        context = LocalContext(
            function_name=spec.name,
            timeout_seconds=spec.timeout_seconds,
            memory_limit_in_mb=spec.memory_mb,
            log_group_name=f"/aws/lambda/{spec.name}",
            invoked_function_arn=f"arn:aws:lambda:local:000000000000:function:{spec.name}",
            _deadline=time.monotonic() + spec.timeout_seconds,
        )
        try:
            reply: tuple[str, Any] = ("ok", handler(event, context))
        except Exception:  # the handler's exception is the invocation's error, as on Lambda
            reply = ("error", traceback.format_exc())
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
