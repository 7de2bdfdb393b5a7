"""The drain board's logic and the launcher's reading of a serve config and its child's signals, without Ray."""

import signal
import subprocess
import sys
from pathlib import Path

import yaml

from gen3d.service.drain import HEARTBEAT_STALE_S, DrainBoard
from gen3d.service.launcher import drain_timeout_s, service_url, sigint_by_default


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_settled_only_once_every_live_replica_saw_the_switch_and_holds_nothing() -> None:
    clock = FakeClock()
    board = DrainBoard(clock)
    assert board.heartbeat("a", 3) is False and board.heartbeat("b", 0) is False
    assert not board.status().draining and board.status().in_flight == 3
    clock.now += 0.1
    board.start()
    status = board.status()
    assert status.draining and not status.acknowledged and not status.settled  # nobody has seen it yet
    clock.now += 0.1
    assert board.heartbeat("a", 2) is True
    assert not board.status().acknowledged  # "b" has not reported since the switch
    board.heartbeat("b", 0)
    status = board.status()
    assert status.acknowledged and status.in_flight == 2 and not status.settled
    clock.now += 0.1
    board.heartbeat("a", 0)
    assert board.status().settled


def test_a_silent_replica_stops_counting_after_the_stale_time() -> None:
    clock = FakeClock()
    board = DrainBoard(clock)
    board.heartbeat("gone", 5)
    board.start()
    clock.now += HEARTBEAT_STALE_S + 0.1
    board.heartbeat("alive", 0)
    status = board.status()
    assert status.replicas == 1 and status.in_flight == 0 and status.settled


def test_launcher_reads_the_url_and_the_drain_time_from_the_serve_config(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    config = {
        "http_options": {"host": "0.0.0.0", "port": 9001},
        "applications": [{"deployments": [{"name": "Ingress", "user_config": {"drain_timeout_s": 12}}]}],
    }
    path.write_text(yaml.safe_dump(config))
    assert service_url(path) == "http://127.0.0.1:9001"  # a wildcard bind is reached on loopback
    assert drain_timeout_s(path) == 12.0
    path.write_text(yaml.safe_dump({"applications": [{"deployments": []}]}))
    assert service_url(path) == "http://127.0.0.1:8000" and drain_timeout_s(path) == 30.0


def test_a_child_takes_back_the_ctrl_c_a_background_start_ignores() -> None:
    """Started with ``&`` and no job control, a process inherits SIGINT ignored and so would its
    ``serve run``: the graceful stop (SIGINT) would never reach it. ``sigint_by_default`` undoes that."""
    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a background start leaves
    try:
        inherited = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
        restored = subprocess.run(probe, capture_output=True, text=True, check=True, preexec_fn=sigint_by_default).stdout.strip()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (inherited, restored) == ("False", "True")

