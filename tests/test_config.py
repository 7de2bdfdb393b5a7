"""Presets are data: every shipped preset validates; overrides merge; mistakes fail at load."""

import re

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from deployments._runtime import STAGE_OPTIONS
from gen3d.config import CONFIG_DIR, load_preset
from gen3d.service.api import ServiceConfig
from gen3d.service.job_store import JobStoreConfig
from graph import GraphArgs

ROOT = CONFIG_DIR.parent


@pytest.mark.parametrize("name", ["tiny", "fast", "random"])
def test_shipped_presets_validate(name: str) -> None:
    preset = load_preset(name)
    assert preset.text_to_image.steps in preset.text_to_image.allowed_steps


def test_real_weights_are_pinned_to_commits_and_digests() -> None:
    """The production preset names a Hub commit for FLUX and TripoSR and a sha256 where a loader checks one."""
    weights = load_preset("fast").weights()
    commit, digest = re.compile(r"[0-9a-f]{40}"), re.compile(r"[0-9a-f]{64}")
    assert weights["text_to_image"]["repo"] == "black-forest-labs/FLUX.1-schnell"
    assert commit.fullmatch(weights["text_to_image"]["revision"])
    assert weights["image_to_3d"]["repo"] == "stabilityai/TripoSR"
    assert commit.fullmatch(weights["image_to_3d"]["revision"]) and digest.fullmatch(weights["image_to_3d"]["sha256"])
    assert weights["background"]["session"] == "isnet-general-use" and digest.fullmatch(weights["background"]["sha256"])
    assert {source["mode"] for source in load_preset("tiny").weights().values()} == {"tiny"}


def test_overrides_merge_into_one_stage_only() -> None:
    preset = load_preset("tiny", {"image_to_3d": {"mc_resolution": 32}})
    assert preset.image_to_3d.mc_resolution == 32
    assert preset.image_to_3d.mode == "tiny"  # the rest of the stage is kept
    assert preset.text_to_image == load_preset("tiny").text_to_image


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="mc_reslution"):
        load_preset("tiny", {"image_to_3d": {"mc_reslution": 32}})


def test_default_outside_allowed_values_is_rejected() -> None:
    with pytest.raises(ValidationError, match="allowed_steps"):
        load_preset("tiny", {"text_to_image": {"steps": 8}})


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="tiny"):
        load_preset("nope")


SERVE_CONFIGS = ["serve_config.yaml", "configs/serve_tiny.yaml", "configs/serve_random.yaml", "configs/serve_random_bf16.yaml"]


@pytest.mark.parametrize("path", SERVE_CONFIGS)
def test_serve_configs_pass_rays_schema_keep_gpu_shares_and_loopback(path: str) -> None:
    config = yaml.safe_load((ROOT / path).read_text())
    ServeDeploySchema.model_validate(config)  # what `serve run` / `serve deploy` check first
    assert config["http_options"]["host"] == "127.0.0.1"
    app = config["applications"][0]
    GraphArgs.model_validate(app["args"])
    deployments = app["deployments"]
    resourced = [d for d in deployments if "ray_actor_options" in d]
    gpu_total = sum(d["ray_actor_options"]["num_gpus"] * d.get("num_replicas", 1) for d in resourced)
    # A redeploy starts the replacement before the old replica stops: twice the shares must fit.
    assert 2 * gpu_total <= 1.0
    for deployment in resourced:  # the dict is replaced whole when overridden
        assert {"num_cpus", "num_gpus"} <= set(deployment["ray_actor_options"])
    by_name = {d["name"]: d for d in deployments}
    ServiceConfig.model_validate(by_name["Ingress"]["user_config"])
    JobStoreConfig.model_validate(by_name["SharedState"]["user_config"])
    assert load_preset(app["args"]["preset"], app["args"].get("overrides")) is not None


@pytest.mark.parametrize("path", SERVE_CONFIGS)
def test_stage_options_are_said_once_in_the_decorators(path: str) -> None:
    deployments = yaml.safe_load((ROOT / path).read_text())["applications"][0]["deployments"]
    for deployment in deployments:
        assert not set(STAGE_OPTIONS) & set(deployment), f"{deployment['name']} repeats a decorator option"
