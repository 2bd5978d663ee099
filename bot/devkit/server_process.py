"""Start the real ProdOps server (or any command) as a child process, wait until it is healthy, stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server child process in its own process group (so gunicorn's workers go with it)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        command: Sequence[str] | None = None,
        log_path: Path | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.command = list(
            command or [sys.executable, "-m", "bot.cli", "serve", "--bind", f"127.0.0.1:{self.port}"]
        )
        self.env = {**os.environ, **env, "PORT": str(self.port)}
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        """The Slack request URL of this server."""
        return self.base_url + "/slack/events"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Starts the process and waits until GET /healthz answers 200."""
        self._log_file = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; log: {self.log_tail()}")
            if self.health() == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy in {timeout}s; log: {self.log_tail()}")

    def health(self) -> int | None:
        """HTTP status of GET /healthz, or None when nothing answers."""
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return None

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, as far as the server can tell."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close_log()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not go in time."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file not in (None, subprocess.DEVNULL):
            self._log_file.close()  # type: ignore[union-attr]
        self._log_file = None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for error messages."""
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
