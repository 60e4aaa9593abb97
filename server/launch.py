"""Start the real server (python -m server) as a subprocess on a free loopback port, and stop it.

    with start_server(model="shipped", max_batch_size=4) as server:
        OpenAI(base_url=f"{server.url}/v1", api_key="none")...

A lesson or a test talks to it over HTTP exactly as any client would. The process is stopped on
leaving the with block, by .stop(), or at the latest when the Python that started it exits.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parent.parent  # the repository: `server` and `course_lib` in it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A running `python -m server`: its `url`, `port`, `process` (Popen) and `log_path`."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path):
        self.process, self.port, self.log_path = process, port, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of what the server printed (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 15) -> int:
        """SIGTERM (a graceful stop), SIGKILL if it has not exited after timeout_s; its exit code.
        Stopping a stopped server does nothing."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        atexit.unregister(self.stop)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"stopped ({self.process.returncode})"
        return f"ServerProcess({self.url}, {state})"


def start_server(model: str = "shipped", port: int | None = None, *, timeout_s: float = 120,
                 log_path: str | Path | None = None, **options: object) -> ServerProcess:
    """python -m server --model model on 127.0.0.1:port (None: a free one); returns once /health
    answers. options become flags: max_batch_size=4 -> --max-batch-size 4.
    Raises RuntimeError with the end of the server's output if it does not start."""
    port = free_port() if port is None else port
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix=f"server-{port}-", suffix=".log")
        os.close(handle)
        log_path = name
    log_path = Path(log_path)
    args = [sys.executable, "-m", "server", "--model", model, "--port", str(port)]
    for key, value in options.items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONPATH=path))
    server = ServerProcess(process, port, log_path)
    atexit.register(server.stop)  # never left running by a notebook or test that failed
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if not server.running() or time.monotonic() > deadline:
            why = ("exited with code " + str(process.returncode) if not server.running()
                   else f"did not answer /health within {timeout_s:g} s")
            server.stop()
            raise RuntimeError(f"the server ({' '.join(args[1:])}) {why}; its output ended "
                               f"with:\n{server.log_tail()}")
        time.sleep(0.25)
