"""The local runtime: moto's server on one address, the deployment's resources, a dispatcher."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

from moto.server import ThreadedMotoServer

from ops.local.dispatcher import Dispatcher, DispatcherConfig, Outcome
from ops.local.functions import DEFAULT_HANDLERS, resolve_handler
from ops.local.functions import LOCAL_CREDENTIALS as LOCAL_CREDENTIALS
from ops.local.functions import endpoint_environment as endpoint_environment
from ops.local.moto_edge import aws_like_moto
from ops.local.resources import (
    DEFAULT_BUCKET,
    DEFAULT_REGION,
    Clients,
    Deployment,
    create_resources,
)
from shared import naming
from shared.tables import TABLES


class PortInUseError(Exception):
    """The address the runtime should listen on is taken."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port(host: str, port: int) -> None:
    # ThreadedMotoServer.start() waits for ever when its server thread cannot bind: check first.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@contextlib.contextmanager
def aws_environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Point this process's boto3 somewhere else for a while, then leave it as it was."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LocalRuntime:
    """Start with `start()` (or `with`): endpoint up, resources created, dispatcher running.

    While it runs it points this process's boto3 at the endpoint (AWS_ENDPOINT_URL, dummy
    credentials, region), so `ops.operations` and `BucketStore` used alongside it reach the
    local AWS; `stop()` restores the variables. moto's backends are per process: one runtime
    per process at a time (start() resets them).
    """

    def __init__(
        self,
        on_outcome: Callable[[Outcome], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bucket: str = DEFAULT_BUCKET,
        tables: Iterable[str] = tuple(TABLES),
        prefix: str = naming.DEFAULT_PREFIX,
        region: str = DEFAULT_REGION,
        handlers: Mapping[str, str] = DEFAULT_HANDLERS,
        config: DispatcherConfig | None = None,
        verbose: bool = False,
        log_dir: Path | None = None,
        warehouse_dsn: str | None = None,
    ) -> None:
        self.on_outcome = on_outcome
        self.warehouse_dsn = warehouse_dsn
        self.host = host
        self.port = port or free_port(host)
        self.bucket = bucket
        self.tables = tuple(tables)
        self.prefix = prefix
        self.region = region
        self.handlers = handlers
        self.config = config or DispatcherConfig(log_dir=log_dir)
        self.verbose = verbose
        self._server: ThreadedMotoServer | None = None
        self._environment = contextlib.ExitStack()
        self.dispatcher: Dispatcher | None = None
        self.deployment: Deployment | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        return endpoint_environment(self.endpoint_url, self.region)

    def start(self) -> LocalRuntime:
        for path in self.handlers.values():  # a missing handler: fail before anything starts
            resolve_handler(path)
        if not self.verbose:
            logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        _check_port(self.host, self.port)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        try:
            # moto's S3 made to notify and write as AWS's does, while the runtime runs
            self._environment.enter_context(aws_like_moto())
            # moto's backends live in this process, shared by every server and mock in it:
            # start from a clean slate (one runtime per process at a time).
            urllib.request.urlopen(
                urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"),
                timeout=10,
            ).close()
            self._environment.enter_context(aws_environment(self.environment()))
            clients = Clients.create(self.endpoint_url, self.region)
            self.deployment = create_resources(
                clients,
                bucket=self.bucket,
                tables=self.tables,
                prefix=self.prefix,
                region=self.region,
            )
            self.dispatcher = Dispatcher(
                self.deployment,
                clients,
                self.endpoint_url,
                self.on_outcome,
                handlers=self.handlers,
                config=self.config,
                warehouse_dsn=self.warehouse_dsn,
            )
            self.dispatcher.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
            self.dispatcher = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._environment.close()  # leave this process (and moto) as we found it

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
