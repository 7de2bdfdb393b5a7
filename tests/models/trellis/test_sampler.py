"""The guided Euler flow sampler against the reference's, each driving its own SS flow on identical
seeded weights and noise: every intermediate x, every x_0 prediction and the final sample.

The reference runs the condition and the negative condition as two calls; ours as one batch of 2.
"""

import itertools
import types

import pytest
import torch

from gen3d.models.trellis.sampler import (
    GuidedVelocity,
    SamplerConfig,
    guide,
    model_timesteps,
    sample,
    time_pairs,
)
from gen3d.models.trellis.ss_flow import (
    SparseStructureFlowConfig,
    SparseStructureFlowModel,
)
from tests.models.trellis.reference import (
    assert_parity,
    load_seeded,
    reference_outputs,
    relative_error,
)

SEED = 17
FLOW = SparseStructureFlowConfig.tiny()
#: (noise batch, steps): a batch-1 condition drives both; steps 4 puts a step exactly on t = 0.5,
#: the guidance interval's closed lower end.
RUNS = {"single": (1, 5), "pair": (2, 4)}
GUIDANCE = {"cfg_strength": 7.5, "cfg_interval": (0.5, 1.0), "rescale_t": 3.0}


def _inputs(batch: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED + batch)
    side = FLOW.resolution
    cond = torch.randn(1, 9, FLOW.cond_channels, generator=generator)
    return {"noise": torch.randn(batch, FLOW.in_channels, side, side, side, generator=generator), "cond": cond}


def _flatten(run: str, samples: torch.Tensor, xs: list, x0s: list) -> dict[str, torch.Tensor]:
    """Each step's x and x_0 prediction by name; the final sample is the last x."""
    assert samples is xs[-1]
    named = {f"{run}.x.{step}": x for step, x in enumerate(xs)}
    named.update({f"{run}.x0.{step}": x for step, x in enumerate(x0s)})
    return named


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    model = load_seeded(ref.models.SparseStructureFlowModel(**FLOW.to_reference_dict()), SEED)
    sampler = ref.samplers.FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)
    outputs = {}
    for run, (batch, steps) in RUNS.items():
        inputs = _inputs(batch)
        cond = inputs["cond"]
        result = sampler.sample(
            model, inputs["noise"], cond=cond, neg_cond=torch.zeros_like(cond), steps=steps, verbose=False, **GUIDANCE
        )
        outputs.update(_flatten(run, result.samples, result.pred_x_t, result.pred_x_0))
    return outputs


def _model() -> SparseStructureFlowModel:
    return load_seeded(SparseStructureFlowModel(FLOW), SEED)


def _config(steps: int) -> SamplerConfig:
    return SamplerConfig(steps=steps, sigma_min=1e-5, **GUIDANCE)


def test_trajectory_matches_the_reference_with_cfg_as_one_batch_of_two() -> None:
    model, ours = _model(), {}
    with torch.no_grad():
        for run, (batch, steps) in RUNS.items():
            inputs = _inputs(batch)
            cond = inputs["cond"]
            velocity = GuidedVelocity(model, cond, torch.zeros_like(cond), GUIDANCE["cfg_strength"])
            result = sample(velocity, inputs["noise"], _config(steps), keep_trajectory=True)
            ours.update(_flatten(run, result.samples, list(result.trajectory), list(result.predicted_x0)))
    assert_parity(ours, reference_outputs("sampler", _reference))


def test_batch_of_two_gives_the_velocity_of_two_separate_calls() -> None:
    model, inputs = _model(), _inputs(2)
    cond, neg_cond = inputs["cond"], torch.zeros_like(inputs["cond"])
    x, t = inputs["noise"], 0.75
    with torch.no_grad():
        batched = GuidedVelocity(model, cond, neg_cond, 7.5)(x, t, guided=True)
        timesteps = model_timesteps(t, 2, x.device)
        conditional = model(x, timesteps, cond.expand(2, -1, -1))
        separate = guide(conditional, model(x, timesteps, neg_cond.expand(2, -1, -1)), 7.5)
        unguided = GuidedVelocity(model, cond, neg_cond, 7.5)(x, t, guided=False)
    assert relative_error(batched, separate) <= 1e-6
    assert relative_error(unguided, conditional) <= 1e-6
    assert relative_error(batched, conditional) > 1e-2  # guidance does change the velocity


class _Boxed:
    """A state offering only what the sampler may use: ``x - y`` and ``float * x``."""

    def __init__(self, feats: torch.Tensor):
        self.feats = feats

    def __sub__(self, other: "_Boxed") -> "_Boxed":
        return _Boxed(self.feats - other.feats)

    def __rmul__(self, scale: float) -> "_Boxed":
        return _Boxed(scale * self.feats)


def test_sampler_needs_only_subtraction_and_scaling_of_the_state() -> None:
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(SEED))
    target = torch.linspace(-1, 1, 12).reshape(3, 4)

    def dense(x: torch.Tensor, t: float, guided: bool) -> torch.Tensor:
        return (x - target) / max(t, 1e-3) * (2.0 if guided else 1.0)

    def boxed(x: _Boxed, t: float, guided: bool) -> _Boxed:
        return _Boxed(dense(x.feats, t, guided))

    cfg = _config(6)
    expected = sample(dense, noise, cfg, keep_trajectory=True)
    got = sample(boxed, _Boxed(noise), cfg, keep_trajectory=True)
    assert torch.equal(got.samples.feats, expected.samples)
    assert all(torch.equal(a.feats, b) for a, b in zip(got.predicted_x0, expected.predicted_x0, strict=True))
    assert len(expected.trajectory) == 6 and expected.trajectory[-1] is expected.samples


def test_time_schedule_is_warped_towards_the_noise_end() -> None:
    pairs = time_pairs(4, 3.0)
    assert pairs[0][0] == 1.0 and pairs[-1][1] == 0.0
    assert [t for t, _ in pairs] == pytest.approx([1.0, 0.9, 0.75, 0.5])
    assert all(t_prev == next_t for (_, t_prev), (next_t, _) in itertools.pairwise(pairs))


def test_config_reads_and_writes_the_pipeline_section() -> None:
    section = {
        "name": "FlowEulerGuidanceIntervalSampler",
        "args": {"sigma_min": 1e-5},
        "params": {"steps": 25, "cfg_strength": 7.5, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0},
    }
    cfg = SamplerConfig.from_reference_dict(section)
    assert cfg == SamplerConfig.sparse_structure()
    assert cfg.to_reference_dict() == section
    with pytest.raises(ValueError, match="params.eta"):
        SamplerConfig.from_reference_dict({**section, "params": {**section["params"], "eta": 1}})
    with pytest.raises(ValueError, match="cfg_interval"):
        SamplerConfig(cfg_interval=(1.0, 0.5))
