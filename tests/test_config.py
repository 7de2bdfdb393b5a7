"""Presets are data: every shipped preset validates; overrides merge; mistakes fail at load."""

import pytest
import yaml
from pydantic import ValidationError

from gen3d.config import CONFIG_DIR, load_preset

ROOT = CONFIG_DIR.parent


@pytest.mark.parametrize("name", ["tiny", "fast", "random"])
def test_shipped_presets_validate(name: str) -> None:
    preset = load_preset(name)
    assert preset.text_to_image.steps in preset.text_to_image.allowed_steps


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


@pytest.mark.parametrize(
    "path", ["serve_config.yaml", "configs/serve_tiny.yaml", "configs/serve_random.yaml", "configs/serve_random_bf16.yaml"]
)
def test_serve_configs_keep_gpu_shares_and_loopback(path: str) -> None:
    config = yaml.safe_load((ROOT / path).read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    deployments = config["applications"][0]["deployments"]
    gpu_total = sum(d["ray_actor_options"]["num_gpus"] * d["num_replicas"] for d in deployments)
    # A redeploy starts the replacement before the old replica stops: twice the shares must fit.
    assert 2 * gpu_total <= 1.0
    for deployment in deployments:  # the dict is replaced whole when overridden
        assert {"num_cpus", "num_gpus"} <= set(deployment["ray_actor_options"])
    preset = load_preset(config["applications"][0]["args"]["preset"])
    assert preset is not None
