"""What every stage deployment shares: one worker thread, metrics, and health tracking.

The model call runs on a single worker thread so the replica's event loop stays free for health
checks and queueing, while the model itself never sees two requests at once.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from ray.serve.metrics import Counter, Gauge, Histogram

from gen3d.errors import InputError, StageOutputError
from gen3d.service.gpu_trace import TraceWindow
from gen3d.service.job_store import JobStoreError
from gen3d.service.logs import brief_expected_errors

logger = logging.getLogger(__name__)
T = TypeVar("T")

LATENCY_BOUNDARIES_S = [0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0]
# Exceptions that say the request was bad or the result unusable; the replica itself is fine.
REQUEST_ERRORS = (InputError, StageOutputError)
#: What a replica method may raise as an answer, not as a failure: logged in one line, no traceback.
EXPECTED_ERRORS = (*REQUEST_ERRORS, JobStoreError)


#: Serve options every stage deployment shares, said once here; serve configs set only resources,
#: replica counts and autoscaling. Each replica runs one call at a time on its worker thread and
#: keeps the next ones queued locally, so the router never backs off between requests (at
#: max_ongoing_requests 1 it waits up to 0.5 s); beyond max_queued_requests the ingress says 503.
STAGE_OPTIONS = {
    "max_ongoing_requests": 4,
    "max_queued_requests": 32,
    "health_check_period_s": 10,
    "health_check_timeout_s": 30,
    "graceful_shutdown_timeout_s": 60,
}

#: Top-level loggers of our own code; in a replica, Serve configures only ``ray.serve``.
OWN_LOGGERS = ("gen3d", "deployments")


def route_logs_to_serve() -> None:
    """Send our loggers' records through the replica's Serve handlers (its log file and stderr).

    Without this, every record below WARNING from ``gen3d`` and ``deployments`` is dropped in a
    replica, which hid minutes of start-up progress (load, compile, capture) from the dashboard.
    The Serve logger's level (``logging_config.log_level``) applies to ours too. Serve's record
    of a method that raised one of ``EXPECTED_ERRORS`` becomes one INFO line.
    """
    serve_logger = logging.getLogger("ray.serve")
    brief_expected_errors(serve_logger, EXPECTED_ERRORS)
    for name in OWN_LOGGERS:
        own = logging.getLogger(name)
        own.handlers = list(serve_logger.handlers)
        own.setLevel(serve_logger.level)
        own.propagate = False


class StageRuntime:
    """Runs a stage's blocking calls off the event loop and records their metrics.

    Args:
        stage: fixed stage name (``text_to_image``, ``background``, ``image_to_3d``, ``export``).
        device: the stage's torch device, for the GPU-memory gauge.
    """

    def __init__(self, stage: str, device: torch.device) -> None:
        self.stage = stage
        self.device = device
        self.fatal: BaseException | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=stage)
        self._tags = {"stage": stage}
        # Created inside the replica so Serve adds its deployment and replica tags.
        self._latency = Histogram(
            "gen3d_stage_latency_s", "Seconds one stage spent on one request", LATENCY_BOUNDARIES_S, ("stage",)
        )
        self._requests = Counter("gen3d_stage_requests", "Requests a stage handled", ("stage",))
        self._errors = Counter("gen3d_stage_errors", "Requests a stage failed, by kind", ("stage", "kind"))
        self._gpu_memory = Gauge("gen3d_stage_gpu_peak_bytes", "Peak GPU memory allocated by a stage process", ("stage",))
        #: The opt-in GPU trace (``GEN3D_PROFILE_DIR``), None when off.
        self.trace = TraceWindow.from_env(stage, device)
        if self.trace is not None:
            self._executor.submit(self.trace.prime)

    async def call(self, fn: Callable[..., T], *args: object, items: int = 1) -> tuple[T, float]:
        """Run ``fn(*args)`` on the worker thread; return its result and its own wall seconds.

        The seconds exclude the wait behind earlier requests of this replica, so
        ``Server-Timing`` shows what each stage costs, not how long it queued.

        Args:
            fn, args: the blocking stage call.
            items: requests the call serves (a batch serves several), for the counters and traces.
        """

        def timed() -> tuple[T, float]:
            if self.trace is not None:
                self.trace.before_call()
            start, start_ns = time.perf_counter(), time.time_ns()
            result = fn(*args)
            seconds = time.perf_counter() - start
            if self.trace is not None:
                self.trace.after_call(getattr(fn, "__name__", "call"), items, start_ns, time.time_ns())
            return result, seconds

        self._requests.inc(items, tags=self._tags)
        try:
            result, seconds = await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        except REQUEST_ERRORS as exc:
            self._errors.inc(tags={**self._tags, "kind": type(exc).__name__})
            raise
        except Exception as exc:
            self._errors.inc(tags={**self._tags, "kind": type(exc).__name__})
            self._note_fatal(exc)
            raise
        self._latency.observe(seconds, tags=self._tags)
        self._record_memory()
        return result, seconds

    def _note_fatal(self, exc: Exception) -> None:
        # A CUDA error poisons the context for every later call; only a restart recovers it.
        if isinstance(exc, torch.AcceleratorError) or "CUDA error" in str(exc):
            logger.error("stage %s hit a fatal device error; health check will fail: %s", self.stage, exc)
            self.fatal = exc

    def _record_memory(self) -> None:
        if self.device.type == "cuda":
            self._gpu_memory.set(torch.cuda.max_memory_allocated(self.device), tags=self._tags)

    def check_health(self) -> None:
        """Raise when the stage can no longer serve, so Ray Serve restarts the replica.

        Also lets an idle replica close its GPU trace window (on the worker thread, which owns it).
        """
        if self.trace is not None:
            self._executor.submit(self.trace.poll)
        if self.fatal is not None:
            raise RuntimeError(f"stage {self.stage} is wedged by a device error: {self.fatal}")
