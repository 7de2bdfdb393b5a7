"""deploy/: the cluster launcher config passes Ray's own checks, and the KubeRay RayService's
serveConfigV2 passes Ray Serve's schema and GraphArgs and is the serve-config generator's output.

No schema of the RayService CRD is published on PyPI or npm (KubeRay ships it only as a Go module
and as YAML in its repository), so only its serveConfigV2 and the shape this project relies on are
checked here; ``kubectl apply --dry-run=server`` checks the rest on a cluster with KubeRay.
"""

import copy
import re
import shlex
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

from gen3d import __version__
from gen3d.service.job_store import JobStoreConfig
from graph import GraphArgs
from scripts import serve_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def test_cluster_launcher_config_passes_rays_checks() -> None:
    config = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs first
    misspelt = {**config, "max_workrs": 2}
    with pytest.raises(Exception, match="max_workrs"):
        validate_config(prepare_config(misspelt))
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2 and "--dashboard-host=127.0.0.1" in starts


def test_both_deployments_run_the_image_the_dockerfile_builds() -> None:
    """`podman build -t gen3d:<version> .` (README): the name both manifests give every node."""
    image = f"gen3d:{__version__}"
    assert yaml.safe_load((DEPLOY / "cluster.yaml").read_text())["docker"]["image"] == image
    cluster = rayservice()[0]["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"], *(group["template"] for group in cluster["workerGroupSpecs"])]
    assert {container["image"] for pod in pods for container in pod["spec"]["containers"]} == {image}
    assert "ENTRYPOINT [\"gen3d\", \"serve\"]" in (ROOT / "Dockerfile").read_text()


def rayservice() -> tuple[dict, str]:
    text = (DEPLOY / "rayservice.yaml").read_text()
    return yaml.safe_load(text), text


def test_rayservice_serve_config_is_the_generators_and_passes_rays_schema() -> None:
    manifest, text = rayservice()
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(served)
    GraphArgs.model_validate(served["applications"][0]["args"])
    command = re.search(r"python -m scripts\.serve_config (.+) --out -", text)
    assert command is not None, "the manifest names the generator command it holds the output of"
    config, _, _ = serve_config.build(serve_config.parse_args(shlex.split(command.group(1))))
    assert served == config, f"serveConfigV2 drifted: paste the output of {command.group(0)}"


def test_rayservice_cluster_matches_its_serve_config() -> None:
    manifest, _ = rayservice()
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert served["http_options"]["port"] == 8000  # KubeRay's Serve service targets this port
    deployments = {d["name"]: d for d in served["applications"][0]["deployments"]}
    (workers,) = cluster["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    gpus_per_pod = int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert workers["maxReplicas"] * gpus_per_pod == deployments["TextToImageDeployment"]["autoscaling_config"]["max_replicas"]
    assert workers["minReplicas"] * gpus_per_pod >= deployments["TextToImageDeployment"]["autoscaling_config"]["min_replicas"]
    for pod in (cluster["headGroupSpec"]["template"], workers["template"]):
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]


def test_rayservice_keeps_its_jobs_in_the_redis_of_deploy_redis_yaml() -> None:
    manifest, _ = rayservice()
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    store = JobStoreConfig.model_validate(
        next(d for d in served["applications"][0]["deployments"] if d["name"] == "SharedState")["user_config"]
    )
    redis = {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "redis.yaml").read_text())}
    service, server = redis["Service"], redis["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    assert store.job_store.backend == "redis"
    assert store.job_store.url == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"
    args = dict(zip(server["args"][::2], server["args"][1::2]))
    # Durable before 202, and never an eviction: Redis must refuse a write rather than drop a job.
    assert (args["--appendonly"], args["--appendfsync"], args["--maxmemory-policy"]) == ("yes", "always", "noeviction")
    assert int(args["--maxmemory"].removesuffix("gb")) * 2**30 > store.max_bytes
