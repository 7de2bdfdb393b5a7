"""Test helpers that drive a running ``serve run`` cluster through its dashboard's Serve REST API.

The ``served`` fixture starts its own local Ray cluster; several can run side by side, so the
dashboard address is read from that cluster's log rather than assumed to be :8265.
"""

import copy
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

APP = "gen3d"
_DASHBOARD = re.compile(r"View the dashboard at (?:\x1b\[[0-9;]*m)*(http://[0-9.]+:[0-9]+)")


def ray_auth_headers() -> dict[str, str]:
    """Bearer header for Ray's token auth, from where Ray itself keeps the token (none if unset)."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if token is None and path.is_file():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def ray_session_logs(driver_pid: int) -> Path:
    """The log folder of the local Ray session started by ``serve run`` (its name ends in the driver pid)."""
    root = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
    sessions = sorted(root.glob(f"session_*_{driver_pid}"))
    if not sessions:
        raise FileNotFoundError(f"no Ray session of driver pid {driver_pid} under {root}")
    return sessions[-1] / "logs"


def log_texts(driver_log: Path, driver_pid: int) -> dict[str, str]:
    """The driver's log plus the Ray session's Serve logs and replica stdout/stderr files."""
    logs = ray_session_logs(driver_pid)
    paths = [driver_log, *sorted((logs / "serve").glob("*")), *sorted(logs.glob("worker-*"))]
    return {str(path): path.read_text(errors="replace") for path in paths if path.is_file()}


def replica_log_texts(served: Any, deployment: str) -> dict[str, str]:
    """Each replica log file of one deployment of a ``served`` graph, by path."""
    marker = f"replica_{APP}_{deployment}_"
    return {path: text for path, text in log_texts(served.log, served.process.pid).items() if marker in path}


def listening_addresses(port: int) -> list[str]:
    """Hex local addresses (as /proc/net/tcp{,6} write them) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: TCP_LISTEN
                found.append(address)
    return found


def is_loopback(hex_address: str) -> bool:
    """Whether a /proc/net/tcp address is 127.x.x.x (IPv4, little-endian hex) or ::1 (IPv6)."""
    if len(hex_address) == 8:
        return bytes.fromhex(hex_address)[::-1][0] == 127
    return hex_address == "00000000000000000000000001000000"


@dataclass(frozen=True)
class ServeAdmin:
    """The Serve REST API of one local cluster.

    Attributes:
        dashboard: base URL of the Ray dashboard, e.g. ``http://127.0.0.1:8265``.
    """

    dashboard: str

    @classmethod
    def from_log(cls, log: Path) -> "ServeAdmin":
        """Find the dashboard address ``serve run`` printed when it started its cluster."""
        match = _DASHBOARD.search(log.read_text(errors="replace"))
        if match is None:
            raise RuntimeError(f"no dashboard address in {log}")
        return cls(match.group(1))

    def details(self) -> dict[str, Any]:
        response = httpx.get(f"{self.dashboard}/api/serve/applications/", headers=ray_auth_headers(), timeout=30)
        response.raise_for_status()
        return response.json()

    def deploy_config(self) -> dict[str, Any]:
        """The running config in ``serve deploy``'s schema (what ``deploy`` takes back)."""
        details = self.details()
        http = {key: details["http_options"][key] for key in ("host", "port", "request_timeout_s")}
        app = details["applications"][APP]["deployed_app_config"]
        return {"proxy_location": details["proxy_location"], "http_options": http, "applications": [app]}

    def deploy(self, config: dict[str, Any]) -> None:
        """``serve deploy``: replace the running applications with ``config``."""
        response = httpx.put(
            f"{self.dashboard}/api/serve/applications/", json=config, headers=ray_auth_headers(), timeout=60
        )
        response.raise_for_status()

    def all_running(self) -> bool:
        """The app is RUNNING and every deployment is HEALTHY with only RUNNING replicas."""
        app = self.details()["applications"].get(APP)
        if app is None or app["status"] != "RUNNING":
            return False
        return all(
            dep["status"] == "HEALTHY" and dep["replicas"] and all(r["state"] == "RUNNING" for r in dep["replicas"])
            for dep in app["deployments"].values()
        )

    def deployed(self, config: dict[str, Any]) -> bool:
        """Whether the running app matches ``config``'s replica counts and user_configs."""
        running = self.details()["applications"][APP]["deployments"]
        for wanted in config["applications"][0]["deployments"]:
            state = running[wanted["name"]]
            replicas = [r for r in state["replicas"] if r["state"] == "RUNNING"]
            if "num_replicas" in wanted and len(replicas) != wanted["num_replicas"]:
                return False
            if "user_config" in wanted and state["deployment_config"].get("user_config") != wanted["user_config"]:
                return False
        return True

    def replica_pid(self, deployment: str) -> int:
        """Process id of the one running replica of ``deployment``."""
        replicas = self.details()["applications"][APP]["deployments"][deployment]["replicas"]
        running = [r["pid"] for r in replicas if r["state"] == "RUNNING"]
        if len(running) != 1:
            raise RuntimeError(f"expected one running {deployment} replica, got {replicas}")
        return running[0]


def with_user_config(config: dict[str, Any], name: str, **fields: Any) -> dict[str, Any]:
    """A copy of a deploy config whose deployment ``name`` has ``fields`` over its ``user_config``."""
    changed = copy.deepcopy(config)
    for deployment in changed["applications"][0]["deployments"]:
        if deployment["name"] == name:
            deployment["user_config"] = {**deployment.get("user_config", {}), **fields}
    return changed


def with_service(config: dict[str, Any], **service: Any) -> dict[str, Any]:
    """A copy of a deploy config whose ingress ``user_config`` carries other service settings."""
    return with_user_config(config, "Ingress", **service)


@contextmanager
def redeployed(admin: ServeAdmin, change: Callable[[dict[str, Any]], dict[str, Any]], ready: Callable[[], bool],
               timeout_s: float = 300) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The running app deployed with ``change(config)`` until the block ends, then restored.

    Waits until every replica runs with the new replica counts and user_configs and ``ready()``
    holds, both ways. Yields the config that was deployed.
    """
    original = admin.deploy_config()
    changed = change(copy.deepcopy(original))
    admin.deploy(changed)
    try:
        wait_for(lambda: admin.all_running() and admin.deployed(changed) and ready(), timeout_s, "the updated app")
        yield changed
    finally:
        admin.deploy(original)
        wait_for(lambda: admin.all_running() and admin.deployed(original) and ready(), timeout_s, "the original app")


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    """Poll ``condition()`` until true; raise naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")
