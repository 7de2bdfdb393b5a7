"""Autoscaling on the tiny graph (CPU): load adds replicas of the bottleneck stage only, and
idleness removes them again.

The running session app gets an autoscaling range on every stage (a lightweight update), with
short delays so that the test takes about a minute. The bottleneck is real: a mesh at resolution
128 makes image_to_3d about ten times slower than any other stage of the tiny preset.
"""

import copy
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import ServedGraph
from tests.serve_admin import APP, ServeAdmin, wait_for

pytestmark = pytest.mark.serve
STAGES = ("TextToImageDeployment", "BackgroundDeployment", "ImageTo3DDeployment", "ExportDeployment")
BOTTLENECK = "ImageTo3DDeployment"
# One more replica than the minimum at most; a target of one request in flight per replica, so
# that four clients queued at image_to_3d ask for more; short delays, for the test's sake.
FAST_SCALING = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 2,
    "downscale_delay_s": 5,
    "look_back_period_s": 2,
}
SLOW_MESH = {"prompt": "a tall vase", "texture": "vertex", "resolution": 128}
CLIENTS = 4


def replica_states(admin: ServeAdmin) -> dict[str, list[str]]:
    """Each stage's replica states, e.g. ``{"ImageTo3DDeployment": ["RUNNING", "STARTING"]}``."""
    deployments = admin.details()["applications"][APP]["deployments"]
    return {name: [r["state"] for r in deployments[name]["replicas"]] for name in STAGES}


@pytest.fixture
def autoscaled(served: ServedGraph) -> Iterator[ServeAdmin]:
    """The running app with ``FAST_SCALING`` on every stage, then the original app again."""
    admin = ServeAdmin.from_log(served.log)
    original = admin.deploy_config()
    changed = copy.deepcopy(original)
    for deployment in changed["applications"][0]["deployments"]:
        if deployment["name"] in STAGES:
            deployment.pop("num_replicas", None)
            deployment["autoscaling_config"] = FAST_SCALING
    admin.deploy(changed)

    def scaling_applied() -> bool:
        running = admin.details()["applications"][APP]["deployments"]
        return admin.all_running() and all(running[n]["deployment_config"].get("autoscaling_config") for n in STAGES)

    try:
        wait_for(scaling_applied, 120, "the autoscaled app")
        yield admin
    finally:
        admin.deploy(original)
        wait_for(lambda: admin.all_running() and admin.deployed(original), 180, "the original app")


def test_load_adds_replicas_of_the_bottleneck_only_and_idleness_removes_them(
    served: ServedGraph, autoscaled: ServeAdmin
) -> None:
    assert all(states == ["RUNNING"] for states in replica_states(autoscaled).values())
    stop = threading.Event()
    most = dict.fromkeys(STAGES, 1)

    def client() -> list[int]:
        statuses = []
        while not stop.is_set():
            statuses.append(httpx.post(f"{served.url}/generate", json=SLOW_MESH, timeout=120).status_code)
        return statuses

    def bottleneck_scaled() -> bool:
        states = replica_states(autoscaled)
        for name, replicas in states.items():
            most[name] = max(most[name], len(replicas))
        return states[BOTTLENECK].count("RUNNING") == 2

    with ThreadPoolExecutor(CLIENTS) as pool:
        clients = [pool.submit(client) for _ in range(CLIENTS)]
        try:
            wait_for(bottleneck_scaled, 120, "a second image_to_3d replica under load")
        finally:
            stop.set()
        statuses = [status for future in clients for status in future.result()]
    assert statuses and set(statuses) == {200}
    assert most == {**dict.fromkeys(STAGES, 1), BOTTLENECK: 2}, "a stage that is not the bottleneck scaled"
    wait_for(lambda: replica_states(autoscaled)[BOTTLENECK] == ["RUNNING"], 90, "back to one replica when idle")
