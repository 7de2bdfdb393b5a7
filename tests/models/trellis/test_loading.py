"""TRELLIS's release files: config from pipeline.json and the ckpt JSONs, strict safetensors loading."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gen3d.errors import WeightsUnavailableError
from gen3d.models.trellis.config import RELEASE_MODELS, TrellisConfig
from gen3d.models.trellis.dinov2 import hub_to_hf
from gen3d.models.trellis.pipeline import TrellisImageTo3D
from gen3d.parts.checkpoints import CheckpointError, file_sha256

#: Network configs as ckpt JSONs, by pipeline.json model key.
CONFIGS = {
    "sparse_structure_flow_model": "sparse_structure_flow",
    "sparse_structure_decoder": "sparse_structure_decoder",
    "slat_flow_model": "slat_flow",
    "slat_decoder_mesh": "mesh_decoder",
    "slat_decoder_gs": "gaussian_decoder",
}


def write_release(root: Path, model: TrellisImageTo3D) -> tuple[Path, Path]:
    """A release directory in the official layout holding ``model``'s weights, and DINOv2's."""
    release, conditioner = root / "trellis", root / "dinov2"
    (release / "ckpts").mkdir(parents=True)
    conditioner.mkdir()
    cfg = model.cfg
    stems = {key: f"ckpts/{key}_tiny" for key in RELEASE_MODELS}
    pipeline = {
        "name": "TrellisImageTo3DPipeline",
        "args": {
            "models": stems,
            "sparse_structure_sampler": cfg.structure_sampler.to_reference_dict(),
            "slat_sampler": cfg.latent_sampler.to_reference_dict(),
            "slat_normalization": {"mean": list(cfg.slat_mean), "std": list(cfg.slat_std)},
            "image_cond_model": "dinov2_vitl14_reg",
        },
    }
    (release / "pipeline.json").write_text(json.dumps(pipeline))
    for key, stem in stems.items():
        args = getattr(cfg, CONFIGS[key]).to_reference_dict()
        (release / f"{stem}.json").write_text(json.dumps({"name": RELEASE_MODELS[key], "args": args}))
        save_file({k: v.contiguous() for k, v in model.get_submodule(key).state_dict().items()}, release / f"{stem}.safetensors")
    (conditioner / "config.json").write_text(json.dumps(cfg.conditioner.to_hf_config()))
    save_file(hub_to_hf(model.conditioner.state_dict()), conditioner / "model.safetensors")
    return release, conditioner


@pytest.fixture(scope="module")
def original() -> TrellisImageTo3D:
    torch.manual_seed(4)
    return TrellisImageTo3D.from_config(TrellisConfig.tiny())


def test_a_release_loads_strictly_and_gives_the_same_model(original: TrellisImageTo3D, tmp_path: Path) -> None:
    release, conditioner = write_release(tmp_path, original)
    loaded = TrellisImageTo3D.from_pretrained(repo=str(release), conditioner_repo=str(conditioner))
    assert loaded.cfg == original.cfg
    for key in (*RELEASE_MODELS, "conditioner"):
        ours, theirs = loaded.get_submodule(key).state_dict(), original.get_submodule(key).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), key
    # Nothing is left on the meta device the skeleton was built on (buffers outside the state dict too).
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.condition(image), original.condition(image))


def test_a_renamed_key_is_named_in_the_error(original: TrellisImageTo3D, tmp_path: Path) -> None:
    release, conditioner = write_release(tmp_path, original)
    weights = release / "ckpts/slat_decoder_mesh_tiny.safetensors"
    state = {k: v.contiguous() for k, v in original.slat_decoder_mesh.state_dict().items()}
    state["out_layer.weights"] = state.pop("out_layer.weight")
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"missing keys \['out_layer.weight'\]; unexpected keys \['out_layer.weights'\]"):
        TrellisImageTo3D.from_pretrained(repo=str(release), conditioner_repo=str(conditioner))


def test_digests_are_checked(original: TrellisImageTo3D, tmp_path: Path) -> None:
    release, conditioner = write_release(tmp_path, original)
    good = file_sha256(release / "ckpts/slat_flow_model_tiny.safetensors")
    TrellisImageTo3D.from_pretrained(repo=str(release), conditioner_repo=str(conditioner), sha256={"slat_flow_model": good})
    with pytest.raises(CheckpointError, match="sha256"):
        TrellisImageTo3D.from_pretrained(repo=str(release), conditioner_repo=str(conditioner), sha256={"slat_flow_model": "0" * 64})


def test_missing_files_name_the_fetch_command(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsUnavailableError, match="hf download"):
        TrellisImageTo3D.from_pretrained(repo=str(tmp_path / "empty"), conditioner_repo=str(tmp_path / "empty"))


def test_official_config_is_what_the_release_files_say() -> None:
    official = TrellisConfig.official()
    pipeline = {
        "name": "TrellisImageTo3DPipeline",
        "args": {
            "models": {key: f"ckpts/{key}" for key in RELEASE_MODELS},
            "sparse_structure_sampler": official.structure_sampler.to_reference_dict(),
            "slat_sampler": official.latent_sampler.to_reference_dict(),
            "slat_normalization": {"mean": list(official.slat_mean), "std": list(official.slat_std)},
            "image_cond_model": "dinov2_vitl14_reg",
        },
    }
    checkpoints = {
        key: {"name": RELEASE_MODELS[key], "args": getattr(official, CONFIGS[key]).to_reference_dict()}
        for key in RELEASE_MODELS
    }
    assert TrellisConfig.from_release(pipeline, checkpoints, official.conditioner.to_hf_config()) == official
    wrong = {**checkpoints, "slat_flow_model": {"name": "SLatEncoder", "args": {}}}
    with pytest.raises(ValueError, match="slat_flow_model: expected a SLatFlowModel"):
        TrellisConfig.from_release(pipeline, wrong, official.conditioner.to_hf_config())


def test_normalisation_must_match_the_latent_channels() -> None:
    with pytest.raises(ValueError, match="slat_mean/slat_std"):
        replace(TrellisConfig.tiny(), slat_mean=(0.0,) * 3)
