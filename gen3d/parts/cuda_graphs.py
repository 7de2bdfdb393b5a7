"""Replay a model call as one CUDA graph: the GPU work of thousands of kernel launches for one launch.

At 512 px a FLUX transformer step is about 29 ms of GPU work spread over thousands of small
kernels, so the Python and launch overhead of eager or regionally compiled code leaves the GPU
waiting. A captured graph replays the same kernels, with the same numerics, without the CPU.

A graph is captured per call signature (tensor shapes and dtypes plus the other arguments'
values) on first use, which ``TextToImage.warmup`` triggers for every allowed shape and batch
size. Replays copy the new tensor arguments into the captured input buffers and return clones of
the outputs, so a caller may keep a result across the next call. Calls must not overlap: a stage
runs one call (one request or one batch) at a time.
"""

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

logger = logging.getLogger(__name__)

#: Untimed runs before capture: the first compiles or autotunes, the second settles lazy state.
WARMUP_RUNS = 2


@dataclass
class _Capture:
    """One recorded graph with the buffers it reads and writes."""

    graph: torch.cuda.CUDAGraph
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any


def _argument_key(name: str, value: Any) -> Hashable:
    """What a captured graph depends on: a tensor's layout, any other argument's value.

    Raises:
        TypeError: an argument that is neither a tensor nor hashable (a graph cannot key on it).
    """
    if isinstance(value, torch.Tensor):
        return (name, "tensor", tuple(value.shape), value.dtype, value.device)
    if isinstance(value, dict):  # diffusers passes attention kwargs as a (usually empty) dict
        return (name, tuple(_argument_key(f"{name}.{key}", value[key]) for key in sorted(value)))
    if not isinstance(value, Hashable):
        raise TypeError(f"cuda_graphs: argument {name!r} of type {type(value).__name__} cannot key a CUDA graph")
    return (name, value)


def call_signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Hashable, ...]:
    """The key under which a call's graph is stored (positional and keyword arguments)."""
    positional = tuple(_argument_key(f"#{index}", value) for index, value in enumerate(args))
    return positional + tuple(_argument_key(name, kwargs[name]) for name in sorted(kwargs))


def _static_copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _clone_tensors(output: Any) -> Any:
    return pytree.tree_map_only(torch.Tensor, torch.clone, output)


class CudaGraphed:
    """A callable that runs ``fn`` through CUDA graphs, one per call signature.

    Args:
        fn: the call to capture (a bound ``forward`` or ``decode``, possibly torch.compiled). It must
            be capturable: no host synchronisation and no CPU tensors on the way.
        name: used in logs and errors.
        pool: memory pool shared with the other graphs of one pipeline (graphs run one at a time,
            so their temporaries may overlap); None gives this callable its own pool.
    """

    def __init__(self, fn: Callable[..., Any], name: str, pool: tuple[int, int] | None = None) -> None:
        self.fn = fn
        self.name = name
        self.pool = pool
        #: Seconds spent capturing, summed over signatures: ``warmup_runs`` (where a compiled ``fn``
        #: compiles on first use) and ``record`` (the recording itself).
        self.capture_s = {"warmup_runs": 0.0, "record": 0.0}
        self._captures: dict[tuple[Hashable, ...], _Capture] = {}

    @property
    def captured(self) -> int:
        """How many call signatures have a graph."""
        return len(self._captures)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = call_signature(args, kwargs)
        capture = self._captures.get(key)
        if capture is None:
            capture = self._capture(args, kwargs)
            self._captures[key] = capture
        else:
            self._load_inputs(capture, args, kwargs)
        capture.graph.replay()
        return _clone_tensors(capture.output)

    def _load_inputs(self, capture: _Capture, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for static, value in zip(capture.args, args):
            if isinstance(value, torch.Tensor):
                static.copy_(value)
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                capture.kwargs[name].copy_(value)

    def _capture(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Capture:
        """Warm up on a side stream, then record ``fn`` on the captured input buffers."""
        static_args = tuple(_static_copy(value) for value in args)
        static_kwargs = {name: _static_copy(value) for name, value in kwargs.items()}
        # Capture runs on a side stream; warming up there too keeps lazily created library
        # handles (cuBLAS workspaces, compiled kernels) out of the recording.
        start = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.fn(*static_args, **static_kwargs)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        recording = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                output = self.fn(*static_args, **static_kwargs)
        except RuntimeError as err:
            raise RuntimeError(
                f"cuda_graphs: {self.name} could not be captured ({err}); set cuda_graphs: false for this model"
            ) from err
        torch.cuda.synchronize()
        warmup_s, record_s = recording - start, time.perf_counter() - recording
        self.capture_s["warmup_runs"] += warmup_s
        self.capture_s["record"] += record_s
        logger.info(
            "cuda_graphs: captured %s for %d signature(s): warm-up runs %.2f s, recording %.2f s",
            self.name, len(self._captures) + 1, warmup_s, record_s,
        )
        return _Capture(graph, static_args, static_kwargs, output)


def graph_method_(owner: object, method: str, name: str, pool: tuple[int, int] | None) -> CudaGraphed:
    """Route ``owner.method`` through a :class:`CudaGraphed` (an instance attribute shadows the class's).

    Returns:
        The wrapper, already installed.
    """
    graphed = CudaGraphed(getattr(owner, method), name, pool)
    setattr(owner, method, graphed)
    return graphed


def ungraph_method_(owner: object, method: str) -> None:
    """Undo :func:`graph_method_`: the wrapped call is restored; its graphs and their pool go with the wrapper."""
    graphed = owner.__dict__.get(method)
    if isinstance(graphed, CudaGraphed):
        setattr(owner, method, graphed.fn)
