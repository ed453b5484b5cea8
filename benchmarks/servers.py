"""A server for a benchmark in its own process: started, its URL read, stopped at the end.

Both provider benchmarks run their server (the simulator, or provider_throughput's tiny
server) in a child process that prints ``listening on <base URL>`` once it serves, so the
server's CPU never shares the measured client's GIL.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator


@contextlib.contextmanager
def listening_process(command: list[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``command`` until the block ends; yields the process and the base URL it printed.

    ``RuntimeError`` if its first line is not ``listening on ...``; SIGTERM at the end
    (SIGKILL if it has not stopped within 10 s).
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"{command[1:3]} did not start: {line!r}")
        yield process, line.removeprefix("listening on ")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
