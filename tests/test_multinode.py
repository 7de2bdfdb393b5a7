"""The tiny graph on a local two-node Ray cluster (CPU): replicas on both nodes serve requests,
and when the worker node dies the head node's replicas serve on.

Both nodes are Ray nodes on this machine (``ray.cluster_utils.Cluster``), each with its own CPU
and a custom resource naming it. The app is deployed through the dashboard's REST API, as
``serve deploy`` does on a real cluster, with two replicas of every deployment and at most one
per node. Which replicas served a request is read from their logs, by request id. The HTTP proxy
runs on the head only (two proxies on one machine would want one port) and prefers its own node's
ingress replica, so the worker's ingress stands by; on a real cluster every node's proxy
(``proxy_location: EveryNode``) feeds its own.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from ray._common.utils import reset_ray_address
from ray.cluster_utils import Cluster

from tests.conftest import ROOT, free_port
from tests.serve_admin import APP, ServeAdmin, wait_for, with_user_config

pytestmark = pytest.mark.serve
SPREAD = ("Ingress", "TextToImageDeployment", "BackgroundDeployment", "ImageTo3DDeployment", "ExportDeployment")
STAGES = SPREAD[1:]
READY_S = 600
CLIENTS = 6


@dataclass(frozen=True)
class TwoNodes:
    """The running cluster, its Serve REST API, the app's URL and each node's id."""

    cluster: Cluster
    admin: ServeAdmin
    url: str
    head_id: str
    worker_id: str
    logs: Path


def spread_config(port: int, jobs: Path) -> dict:
    """The tiny serve config with two replicas of every deployment but the shared state, one per
    node, and its job store in ``jobs``."""
    config = with_user_config(yaml.safe_load((ROOT / "configs" / "serve_tiny.yaml").read_text()), "SharedState",
                              job_store={"backend": "sqlite", "path": str(jobs)})  # fmt: skip
    config["http_options"]["port"] = port
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] in SPREAD:
            deployment.update(num_replicas=2, max_replicas_per_node=1)
    return config


def running_nodes(admin: ServeAdmin) -> dict[str, list[str]]:
    """The node id of each RUNNING replica, per deployment."""
    deployments = admin.details()["applications"][APP]["deployments"]
    return {name: [r["node_id"] for r in deployments[name]["replicas"] if r["state"] == "RUNNING"] for name in SPREAD}


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    # A temp dir of its own keeps this cluster's address file away from every other `ray.init()`
    # on the machine (plain `serve run` would join the last cluster recorded in /tmp/ray).
    temp = Path(f"/tmp/g3mn{uuid.uuid4().hex[:6]}")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", str(temp))
        env.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        dashboard = free_port()
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "resources": {"node_a": 1}, "include_dashboard": True,
                            "dashboard_host": "127.0.0.1", "dashboard_port": dashboard},
        )  # fmt: skip
        try:
            worker = cluster.add_node(num_cpus=1, resources={"node_b": 1})
            cluster.wait_for_nodes()
            admin = ServeAdmin(f"http://127.0.0.1:{dashboard}")
            port = free_port()
            wait_for(lambda: httpx.get(f"{admin.dashboard}/api/version", timeout=5).status_code == 200, 120, "the dashboard")
            admin.deploy(spread_config(port, temp / "jobs"))
            url = f"http://127.0.0.1:{port}"
            # /health turns 200 once one replica of each stage answers; the test needs both nodes' replicas.
            wait_for(
                lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200
                and all(len(set(nodes)) == 2 for nodes in running_nodes(admin).values()),
                READY_S, "the two-node app, every deployment running on both nodes", poll_s=2,
            )  # fmt: skip
            logs = Path(cluster.head_node.get_logs_dir_path()) / "serve"
            yield TwoNodes(cluster, admin, url, cluster.head_node.node_id, worker.node_id, logs)
        finally:
            cluster.shutdown()
            reset_ray_address(str(temp / "ray"))
            shutil.rmtree(temp, ignore_errors=True)


def serving_nodes(nodes: TwoNodes, replicas: dict[str, str], count: int) -> dict[str, set[str]]:
    """Send ``count`` requests with known ids from ``CLIENTS`` clients; per stage, the nodes whose replicas logged them.

    Args:
        replicas: replica id -> node id, from the REST API before the requests.
    """
    probe = uuid.uuid4().hex

    def send(index: int) -> int:
        body = {"prompt": f"object {index}", "seed": index, "texture": "vertex"}
        headers = {"X-Request-ID": f"{probe}-{index}"}
        return httpx.post(f"{nodes.url}/generate", json=body, headers=headers, timeout=120).status_code

    with ThreadPoolExecutor(CLIENTS) as pool:  # queues build up, so the router uses every replica
        assert list(pool.map(send, range(count))) == [200] * count
    served: dict[str, set[str]] = {name: set() for name in STAGES}
    for name in STAGES:
        for path in nodes.logs.glob(f"replica_{APP}_{name}_*.log"):
            replica = path.stem.rsplit("_", 1)[1]
            if replica in replicas and probe in path.read_text(errors="replace"):
                served[name].add(replicas[replica])
    return served


def replica_nodes(admin: ServeAdmin) -> dict[str, str]:
    """Replica id -> node id of every RUNNING replica (a pending one has no node)."""
    deployments = admin.details()["applications"][APP]["deployments"]
    return {r["replica_id"]: r["node_id"] for name in SPREAD for r in deployments[name]["replicas"] if r["state"] == "RUNNING"}


def test_replicas_on_both_nodes_serve_and_the_head_serves_on_when_the_worker_dies(two_nodes: TwoNodes) -> None:
    both = {two_nodes.head_id, two_nodes.worker_id}
    assert {name: set(ids) for name, ids in running_nodes(two_nodes.admin).items()} == dict.fromkeys(SPREAD, both)
    served = serving_nodes(two_nodes, replica_nodes(two_nodes.admin), 24)
    assert served == dict.fromkeys(STAGES, both), "some stage was served from one node only"

    worker = next(iter(two_nodes.cluster.worker_nodes))
    two_nodes.cluster.remove_node(worker, allow_graceful=False)
    head_only = dict.fromkeys(SPREAD, [two_nodes.head_id])
    wait_for(lambda: running_nodes(two_nodes.admin) == head_only, 180, "Serve to drop the dead node's replicas", poll_s=2)
    served = serving_nodes(two_nodes, replica_nodes(two_nodes.admin), 12)
    assert served == dict.fromkeys(STAGES, {two_nodes.head_id})
