"""Runs `ingestctl local up` as a subprocess and reads its lines as they come."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from ops.local.functions import DEFAULT_HANDLERS, HandlerImportError, resolve_handler
from ops.local.runtime import free_port

ROOT = Path(__file__).parents[2]
INGESTCTL = str(Path(sys.executable).parent / "ingestctl")


def merge_handler_missing() -> bool:
    try:
        resolve_handler(DEFAULT_HANDLERS["merge"])
    except HandlerImportError:
        return True
    return False


class LocalUp:
    def __init__(self, log_dir: Path, *args: str) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            env.pop(name, None)
        self.process = subprocess.Popen(
            [INGESTCTL, "local", "up", "--port", str(self.port), "--log-dir", str(log_dir), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._stderr: list[str] = []
        # Both pipes read as they come: a full pipe would block the runtime mid-write.
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def wait_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        for line in self.seen:
            if regex.search(line):
                return line
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if regex.search(line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {timeout}s; saw {self.seen}")

    def drain(self) -> list[str]:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name="eu-west-2",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; one that hangs is made to print its threads'
        stacks (SIGABRT, faulthandler) into `stderr`, then killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            try:
                code = self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        return code
