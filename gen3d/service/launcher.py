"""Run ``serve run CONFIG`` and stop it gracefully: drain first, then shut Serve down.

When the config's ``args.mps`` asks, it first starts a CUDA MPS control daemon for the stage
processes (``gen3d.service.mps``), hands its pipe folder to ``serve run`` and quits it on exit.

Serve's own shutdown (Ctrl-C on ``serve run``) kills its HTTP proxy at once, cutting every
open connection. So this launcher keeps ``serve run`` in a session of its own and takes
SIGINT and SIGTERM itself: it asks the ingress to drain (new requests get 503, work in flight
finishes), waits until the drain board says nothing is left or ``drain_timeout_s`` passes, and
only then interrupts ``serve run``. Ray-free: it speaks HTTP to the service.
"""

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

from gen3d.service.mps import MpsDaemon, MpsUnavailable, mps_mode, start_mps

logger = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "GEN3D_ADMIN_TOKEN"
#: How long Serve gets to shut down after the drain before the launcher kills it.
SHUTDOWN_TIMEOUT_S = 60.0
POLL_S = 0.25


def service_url(config_path: Path) -> str:
    """The base URL a serve config listens on (``http_options``; Serve's defaults otherwise)."""
    http = (yaml.safe_load(config_path.read_text()) or {}).get("http_options") or {}
    host = http.get("host", "127.0.0.1")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{http.get('port', 8000)}"


def drain_timeout_s(config_path: Path, default: float = 30.0) -> float:
    """The ingress's ``drain_timeout_s`` from its ``user_config``, as the service will use it."""
    apps = (yaml.safe_load(config_path.read_text()) or {}).get("applications") or []
    for app in apps:
        for deployment in app.get("deployments") or []:
            if deployment.get("name") == "Ingress":
                return float((deployment.get("user_config") or {}).get("drain_timeout_s", default))
    return default


def drain(url: str, token: str, timeout_s: float) -> bool:
    """Ask the service to drain and wait until it settles; True if it did within ``timeout_s``."""
    headers = {"X-Admin-Token": token}
    deadline = time.monotonic() + timeout_s
    try:
        httpx.post(f"{url}/admin/drain", headers=headers, timeout=10).raise_for_status()
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/admin/drain", headers=headers, timeout=10).json()
            if status["settled"]:
                return True
            time.sleep(POLL_S)
    except httpx.HTTPError as error:  # not up yet, or already gone: nothing left to wait for
        logger.warning("drain: the service did not answer (%s)", type(error).__name__)
        return False
    logger.warning("drain: work still in flight after %.0f s; stopping anyway", timeout_s)
    return False


def stop(child: subprocess.Popen) -> int:
    """Interrupt ``serve run`` as Ctrl-C would, and kill it if it does not exit in time."""
    child.send_signal(signal.SIGINT)
    try:
        return child.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        return child.wait()


def start_mps_for(config_path: Path) -> MpsDaemon | None:
    """The MPS daemon that the config's ``args.mps`` asks for, for its CUDA stages (None: none).

    Raises:
        MpsUnavailable: ``mps: on`` and MPS cannot run here.
        ValueError: the config is unreadable or its ``mps`` is not auto, on or off.
    """
    from gen3d.service.preflight import PreflightError, builder_args, cuda_stages, preset_of

    try:
        mode = mps_mode(builder_args(config_path))
        uses_cuda = bool(cuda_stages(preset_of(config_path)[1])) if mode != "off" else False
    except PreflightError as err:
        raise ValueError(str(err)) from None
    return start_mps(mode, uses_cuda, os.environ)


def run(config_path: Path, serve_command: list[str]) -> int:
    """Start Serve on ``config_path`` (with MPS if it asks); on SIGINT/SIGTERM drain, then stop it.

    Returns:
        ``serve run``'s exit code, 0 after a graceful stop, or 2 when MPS was required and failed.
    """
    try:
        daemon = start_mps_for(config_path)
    except (MpsUnavailable, ValueError) as err:
        print(f"gen3d: {err}", file=sys.stderr, flush=True)
        return 2
    try:
        return serve(config_path, serve_command, daemon.client_env if daemon is not None else {})
    finally:
        if daemon is not None:
            daemon.stop(os.environ)


def sigint_by_default() -> None:
    """``preexec_fn`` for a ``serve run`` child: SIGINT at its default, so the child's Python turns it
    into KeyboardInterrupt. A process started in the background (``nohup``, ``cmd &`` without job
    control) inherits SIGINT ignored, and would pass that on: ``serve run`` would then ignore the
    Ctrl-C that stops it gracefully."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve(config_path: Path, serve_command: list[str], extra_env: dict[str, str]) -> int:
    """``serve run`` with ``extra_env``, stopped gracefully on SIGINT/SIGTERM. Returns its exit code."""
    # A token from the environment lets operators' tools (and the tests) read the drain status too.
    token = os.environ.get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(24)
    child = subprocess.Popen(
        [*serve_command, "run", str(config_path)],
        env={**os.environ, **extra_env, ADMIN_TOKEN_ENV: token},
        start_new_session=True,  # the terminal's Ctrl-C reaches the launcher only
        preexec_fn=sigint_by_default,
    )
    asked = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: asked.set())
    while not asked.wait(0.5):
        if child.poll() is not None:
            return child.returncode
    print("gen3d: stopping: draining requests in flight (new ones get 503)...", file=sys.stderr, flush=True)
    drained = drain(service_url(config_path), token, drain_timeout_s(config_path))
    print(f"gen3d: {'drained' if drained else 'drain incomplete'}; shutting Serve down", file=sys.stderr, flush=True)
    stop(child)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m gen3d.service.launcher CONFIG``: what ``gen3d serve`` runs after its pre-flight."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gen3d.service.launcher CONFIG", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="gen3d: %(message)s")  # the MPS lines
    return run(Path(args[0]), [sys.executable, "-m", "ray.serve.scripts"])


if __name__ == "__main__":
    sys.exit(main())
