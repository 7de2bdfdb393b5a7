"""Euler sampling of TRELLIS's rectified flows, with classifier-free guidance inside a time interval
(the reference's ``FlowEulerGuidanceIntervalSampler``).

The flow runs from noise at t = 1 to data at t = 0 along ``x_prev = x_t - (t - t_prev) * v``. The
sampler never calls a network itself: it asks a ``Velocity`` callable for v at (x_t, t) and says
whether that step is guided, so the caller decides how to batch the conditional and unconditional
passes (one batch of 2 on the GPU: ``GuidedVelocity``). It needs only two operations of the state
``x``: ``x - y`` and ``float * x``, so dense tensors and sparse tensors both work.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

State = TypeVar("State")
_ARGS = {"sigma_min"}
_PARAMS = {"steps", "cfg_strength", "cfg_interval", "rescale_t"}


class Velocity(Protocol[State]):
    """v(x_t, t): ``t`` in [0, 1]; ``guided`` asks for the classifier-free-guided velocity."""

    def __call__(self, x_t: State, t: float, guided: bool) -> State: ...


@dataclass(frozen=True)
class SamplerConfig:
    """One sampler's settings, as in TRELLIS's ``pipeline.json`` (``args`` and ``params``).

    Attributes:
        steps: Euler steps.
        cfg_strength: guidance strength s: v = (1 + s) v_cond - s v_uncond.
        cfg_interval: closed range of t in which steps are guided; outside it, v = v_cond.
        rescale_t: time warp t -> r t / (1 + (r - 1) t), which spends more steps near t = 1.
        sigma_min: noise floor of the flow; only the x_0 prediction uses it.
    """

    steps: int = 25
    cfg_strength: float = 7.5
    cfg_interval: tuple[float, float] = (0.5, 1.0)
    rescale_t: float = 3.0
    sigma_min: float = 1e-5

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps: expected >= 1, got {self.steps}")
        if self.rescale_t <= 0:
            raise ValueError(f"rescale_t: expected > 0, got {self.rescale_t}")
        if len(self.cfg_interval) != 2 or self.cfg_interval[0] > self.cfg_interval[1]:
            raise ValueError(f"cfg_interval: expected (low, high) with low <= high, got {self.cfg_interval}")
        object.__setattr__(self, "cfg_interval", (float(self.cfg_interval[0]), float(self.cfg_interval[1])))

    @classmethod
    def sparse_structure(cls) -> "SamplerConfig":
        """TRELLIS-image-large's sparse-structure sampler."""
        return cls(steps=25, cfg_strength=7.5)

    @classmethod
    def structured_latent(cls) -> "SamplerConfig":
        """TRELLIS-image-large's structured-latent sampler."""
        return cls(steps=25, cfg_strength=3.0)

    @classmethod
    def from_reference_dict(cls, section: dict[str, Any]) -> "SamplerConfig":
        """Parse a ``pipeline.json`` sampler section: {"name", "args": {sigma_min}, "params": {...}}.

        Raises:
            ValueError: another sampler name, or unknown keys in ``args`` / ``params``.
        """
        name = section.get("name")
        if name != "FlowEulerGuidanceIntervalSampler":
            raise ValueError(f"name: expected 'FlowEulerGuidanceIntervalSampler', got {name!r}")
        args, params = dict(section.get("args") or {}), dict(section.get("params") or {})
        unknown = sorted({f"args.{k}" for k in set(args) - _ARGS} | {f"params.{k}" for k in set(params) - _PARAMS})
        if unknown:
            expected = f"args {sorted(_ARGS)}, params {sorted(_PARAMS)}"
            raise ValueError(f"sampler: unknown keys {unknown}; expected {expected}")
        if "cfg_interval" in params:
            params["cfg_interval"] = tuple(params["cfg_interval"])
        return cls(**args, **params)

    def to_reference_dict(self) -> dict[str, Any]:
        """The ``pipeline.json`` section for this config."""
        return {
            "name": "FlowEulerGuidanceIntervalSampler",
            "args": {"sigma_min": self.sigma_min},
            "params": {
                "steps": self.steps,
                "cfg_strength": self.cfg_strength,
                "cfg_interval": list(self.cfg_interval),
                "rescale_t": self.rescale_t,
            },
        }


def time_pairs(steps: int, rescale_t: float) -> list[tuple[float, float]]:
    """The (t, t_prev) of each step, from 1 down to 0, warped by ``rescale_t``.

    Computed in float64 with numpy's linspace, as the reference does, so that the steps and the
    guidance-interval test see the same numbers.
    """
    t = np.linspace(1.0, 0.0, steps + 1)
    t = rescale_t * t / (1 + (rescale_t - 1) * t)
    return [(float(t[i]), float(t[i + 1])) for i in range(steps)]


@dataclass(frozen=True)
class FlowSample(Generic[State]):
    """A sampler run.

    Attributes:
        samples: the final x at t = 0.
        trajectory: x after each step (the last is ``samples``); empty unless asked for.
        predicted_x0: each step's prediction of x_0; empty unless asked for.
    """

    samples: State
    trajectory: tuple[State, ...] = ()
    predicted_x0: tuple[State, ...] = ()


def sample(
    velocity: Velocity[State], noise: State, cfg: SamplerConfig, keep_trajectory: bool = False
) -> FlowSample[State]:
    """Integrate the flow from ``noise`` (t = 1) to t = 0 with Euler steps.

    Args:
        velocity: v(x_t, t, guided); ``guided`` is true where ``cfg.cfg_interval`` holds t.
        noise: x at t = 1 (a dense tensor or a sparse tensor).
        cfg: steps, time warp, guidance interval and sigma_min (``cfg_strength`` belongs to the
            velocity; see ``GuidedVelocity``).
        keep_trajectory: also return every step's x and x_0 prediction.

    Returns:
        The final sample, and the trajectory if asked.
    """
    low, high = cfg.cfg_interval
    x, trajectory, predicted_x0 = noise, [], []
    for t, t_prev in time_pairs(cfg.steps, cfg.rescale_t):
        v = velocity(x, t, low <= t <= high)
        if keep_trajectory:
            # x_0 = (1 - sigma_min) x_t - (sigma_min + (1 - sigma_min) t) v
            predicted_x0.append((1 - cfg.sigma_min) * x - (cfg.sigma_min + (1 - cfg.sigma_min) * t) * v)
        x = x - (t - t_prev) * v
        if keep_trajectory:
            trajectory.append(x)
    return FlowSample(x, tuple(trajectory), tuple(predicted_x0))


def guide(v_cond: State, v_uncond: State, strength: float) -> State:
    """Classifier-free guidance: (1 + s) v_cond - s v_uncond."""
    return (1 + strength) * v_cond - strength * v_uncond


def model_timesteps(t: float, batch: int, device: torch.device) -> torch.Tensor:
    """The networks' timestep input: [batch] float32 of 1000 t (rounded from float64, as the reference)."""
    return torch.full((batch,), 1000 * t, dtype=torch.float32, device=device)


def _stack_dense(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([a, b])


def _split_dense(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    first, second = x.chunk(2)
    return first, second


class GuidedVelocity(Generic[State]):
    """A flow network as a ``Velocity``: guided steps run the condition and the negative condition as
    ONE batch of 2B and combine the halves; unguided steps run the condition alone.

    The network is called as ``model(x, t, context_kv=kv)`` and must offer
    ``model.project_context(cond) -> list of per-block (k, v)``, each [B, S, H, D]; the keys and
    values of [cond; neg_cond] are computed once here and sliced per step. Of the state it reads
    ``x_t.shape[0]`` (the batch size) and ``x_t.device``, and it batches with ``stack`` / ``split``.

    Args:
        model: the flow network.
        cond: [1 or B, S, C] condition tokens.
        neg_cond: negative condition, same shape (TRELLIS: ``zeros_like(cond)``).
        cfg_strength: guidance strength s; 0 turns guided steps into plain conditional ones.
        stack: joins two states along the batch ((a, b) -> [a; b]); default ``torch.cat``.
        split: inverse of ``stack``; default ``chunk(2)``.
    """

    def __init__(
        self,
        model: Callable[..., State],
        cond: torch.Tensor,
        neg_cond: torch.Tensor,
        cfg_strength: float,
        stack: Callable[[State, State], State] = _stack_dense,
        split: Callable[[State], tuple[State, State]] = _split_dense,
    ):
        if cond.shape != neg_cond.shape:
            raise ValueError(f"neg_cond: expected the shape of cond {tuple(cond.shape)}, got {tuple(neg_cond.shape)}")
        self.model = model
        self.cfg_strength = cfg_strength
        self.stack, self.split = stack, split
        self.cond_batch = cond.shape[0]
        self.context_kv = model.project_context(torch.cat([cond, neg_cond]))
        self._picked: dict[tuple[tuple[int, ...], int], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _kv(self, halves: tuple[int, ...], batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block, the keys and values of the chosen halves (0: cond, 1: neg_cond), each repeated
        to ``batch`` rows when the condition has one; cached, so every step reuses the same tensors."""
        if (halves, batch) in self._picked:
            return self._picked[halves, batch]
        n = self.cond_batch
        if n != 1 and n != batch:
            raise ValueError(f"x_t: expected batch {n} (or any, with a batch-1 condition), got {batch}")

        def pick(tensor: torch.Tensor) -> torch.Tensor:
            if halves == (0, 1) and n == batch:
                return tensor  # already [cond; neg_cond] at this batch: no copy
            parts = [tensor[h * n : (h + 1) * n].expand(batch, *tensor.shape[1:]) for h in halves]
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        self._picked[halves, batch] = [(pick(k), pick(v)) for k, v in self.context_kv]
        return self._picked[halves, batch]

    def __call__(self, x_t: State, t: float, guided: bool) -> State:
        batch = x_t.shape[0]
        if not guided or self.cfg_strength == 0:
            return self.model(x_t, model_timesteps(t, batch, x_t.device), context_kv=self._kv((0,), batch))
        timesteps = model_timesteps(t, 2 * batch, x_t.device)
        both = self.model(self.stack(x_t, x_t), timesteps, context_kv=self._kv((0, 1), batch))
        v_cond, v_uncond = self.split(both)
        return guide(v_cond, v_uncond, self.cfg_strength)
