"""The memory the suite's processes hold: this process (which hosts moto's server when the
local runtime runs) plus its children (the function processes), sampled on a thread."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil


def tree_rss() -> tuple[int, int]:
    """Resident bytes of this process, and of it with all its children. A sum of RSS counts
    pages the children share with it (forked) more than once: an upper bound."""
    me = psutil.Process()
    own = me.memory_info().rss
    children = 0
    for child in me.children(recursive=True):
        try:
            children += child.memory_info().rss
        except psutil.NoSuchProcess:  # a function process that just stopped
            continue
    return own, own + children


class PeakMemory:
    """`with PeakMemory() as peak:` ... `peak.total`: the highest `tree_rss` seen meanwhile."""

    def __init__(self, every_seconds: float = 0.25) -> None:
        self.every_seconds = every_seconds
        self.own = 0
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)

    def sample(self) -> tuple[int, int]:
        own, total = tree_rss()
        self.own, self.total = max(self.own, own), max(self.total, total)
        return own, total

    def _sample(self) -> None:
        while not self._stop.wait(self.every_seconds):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def mb(value: int) -> str:
    return f"{value / 2**20:,.0f} MB"
