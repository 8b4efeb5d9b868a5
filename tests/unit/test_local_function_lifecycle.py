"""The local runtime's stop: a closed function starts nothing, and stdout keeps whole lines."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from ops.local import cli_support
from ops.local.functions import FunctionProcess, FunctionSpec, FunctionStartError

SPEC = FunctionSpec(
    name="pause", handler="services.pause.handler:handler", environment={}, timeout_seconds=3
)


def test_a_closed_function_starts_no_process_again():
    # The race this guards: an invocation that found its process gone restarts it while the
    # runtime closes the function; the restart must refuse, or a process outlives the stop.
    function = FunctionProcess(SPEC, None)
    before = set(multiprocessing.active_children())
    function.close()
    with pytest.raises(FunctionStartError, match="shut down"):
        function.start()
    assert "shut down" in (function.invoke({}).error or "")
    assert set(multiprocessing.active_children()) == before


def test_lines_said_from_many_threads_stay_whole(capsys):
    def say(n: int) -> None:
        for i in range(300):
            cli_support._say(f"thread={n} line={i}")

    threads = [threading.Thread(target=say, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capsys.readouterr().out.splitlines()
    expected = {f"thread={n} line={i}" for n in range(8) for i in range(300)}
    assert sorted(lines) == sorted(expected)
