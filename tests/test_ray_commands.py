"""Ray's own commands against the running tiny service, with the environment the docs give.

Ray 2.60 turns token auth on for the cluster ``serve run`` starts, but its CLI sends the token
only under ``RAY_AUTH_MODE=token`` (docs/first-hour-notes.md).
"""

import os
import subprocess
import sys

import httpx
import pytest
import yaml

from tests.conftest import ServedGraph
from tests.serve_admin import APP, ServeAdmin

pytestmark = pytest.mark.serve


def ray_cli(module: str, *args: str, auth_mode: str | None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_MODE"}
    if auth_mode is not None:
        env["RAY_AUTH_MODE"] = auth_mode
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_serve_status_needs_and_works_with_ray_auth_mode_token(served: ServedGraph) -> None:
    dashboard = ServeAdmin.from_log(served.log).dashboard
    without = ray_cli("ray.serve.scripts", "status", "--address", dashboard, auth_mode=None)
    assert without.returncode != 0 and "Missing authentication token" in without.stderr
    status = ray_cli("ray.serve.scripts", "status", "--address", dashboard, auth_mode="token")
    assert status.returncode == 0, status.stderr
    assert yaml.safe_load(status.stdout)["applications"][APP]["status"] == "RUNNING"


def test_the_printed_token_opens_the_dashboard(served: ServedGraph) -> None:
    dashboard = ServeAdmin.from_log(served.log).dashboard
    printed = ray_cli("ray.scripts.scripts", "get-auth-token", auth_mode=None)
    assert printed.returncode == 0, printed.stderr
    token = printed.stdout.strip()
    url = f"{dashboard}/api/serve/applications/"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
