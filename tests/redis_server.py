"""A real ``redis-server`` (Debian's) for the tests: on a free port, with its data in a folder of its own.

It keeps every write in an append-only file synced at once, so stopping and starting it again
(the chaos tests) loses nothing. Tests that need it are skipped where ``redis-server`` is not
installed, unless ``GEN3D_REQUIRE_REDIS=1`` (CI), where a missing server fails.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port

SERVER = os.environ.get("GEN3D_REDIS_SERVER", "redis-server")
START_TIMEOUT_S = 30.0


def require_redis_server() -> str:
    """The server's path; skip (or fail, with ``GEN3D_REQUIRE_REDIS=1``) where it is missing."""
    path = shutil.which(SERVER)
    if path is None:
        message = f"no {SERVER} on PATH: `apt-get install redis-server` (scripts/setup.sh does it as root)"
        if os.environ.get("GEN3D_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


class RedisServer:
    """One ``redis-server`` process, stopped and started again on the same port and data.

    Args:
        folder: where its append-only file and log go.
    """

    def __init__(self, folder: Path) -> None:
        self.binary = require_redis_server()
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING with its data loaded."""
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log()[-2000:]}")
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:  # not listening yet, or still loading its data
                time.sleep(0.05)
        raise RuntimeError(f"redis-server not ready within {START_TIMEOUT_S} s: {self.log()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: Redis syncs its file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.is_file() else ""
