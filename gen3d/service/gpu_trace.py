"""An opt-in GPU trace of one stage replica, over a window that a benchmark opens and closes.

Set ``GEN3D_PROFILE_DIR`` in the replicas' environment (the serve config's ``runtime_env`` or the
environment ``serve run`` starts in). Every replica whose stage runs on CUDA then watches two
files in that folder:

- ``START`` holds a window label (``load8``). At its first call after ``START`` names a label it
  has not recorded yet, and while ``STOP`` is absent, the replica starts ``torch.profiler`` with
  CUDA activity (kernels, copies, the runtime calls that launch them).
- ``STOP``: at its first call or health check after ``STOP`` appears (or after
  ``GEN3D_PROFILE_MAX_CALLS`` calls in the window, default 400, which bounds the trace), the
  replica stops and writes ``<dir>/<label>/<stage>-<pid>.trace.json`` (kineto's Chrome trace:
  ``baseTimeNanoseconds`` plus event times in microseconds after it) and
  ``<stage>-<pid>.calls.json``: the stage, pid, device, the recording's start and end, and each
  call in the window (method, requests it served, start and end), all in Unix nanoseconds, the
  clock kineto's events follow.

``scripts/gpu_timeline.py`` merges the replicas' files onto one clock. A benchmark opens the next
window by removing ``STOP`` and then writing a new label into ``START``.
"""

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

logger = logging.getLogger(__name__)

PROFILE_DIR_ENV = "GEN3D_PROFILE_DIR"
MAX_CALLS_ENV = "GEN3D_PROFILE_MAX_CALLS"
DEFAULT_MAX_CALLS = 400
START_FILE = "START"
STOP_FILE = "STOP"
TRACE_SUFFIX = ".trace.json"
CALLS_SUFFIX = ".calls.json"


class Recorder(Protocol):
    """What the window needs of a profiler: ``torch.profiler.profile`` has these three methods."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def export_chrome_trace(self, path: str) -> None: ...


def cuda_recorder() -> Recorder:
    """A profiler of CUDA activity only: no CPU operator events, so recording costs the stages little."""
    return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])


@dataclass(frozen=True)
class CallRecord:
    """One stage call inside a window.

    Attributes:
        method: the stage method (``generate_batch``, ``process``, ``generate``, ``bake``).
        items: requests the call served (a FLUX batch serves several).
        start_ns, end_ns: Unix nanoseconds around the call on the replica's worker thread.
    """

    method: str
    items: int
    start_ns: int
    end_ns: int


@dataclass
class Window:
    """The window being recorded: its label, when recording started, its calls so far."""

    label: str
    start_ns: int
    calls: list[CallRecord] = field(default_factory=list)


class TraceWindow:
    """Opens and closes a replica's profiler as the ``START`` and ``STOP`` files say.

    Every method runs on the replica's worker thread (the profiler is started and stopped by the
    thread that runs the stage's calls).

    Args:
        stage: the stage name (file names and the trace's metadata).
        device: the stage's CUDA device.
        directory: the folder holding ``START`` and ``STOP`` and receiving the traces.
        max_calls: calls after which a window closes by itself.
        recorder: makes a fresh profiler per window (tests pass a fake).
    """

    def __init__(
        self,
        stage: str,
        device: torch.device,
        directory: Path,
        max_calls: int = DEFAULT_MAX_CALLS,
        recorder: Callable[[], Recorder] = cuda_recorder,
    ) -> None:
        self.stage = stage
        self.device = device
        self.directory = directory
        self.max_calls = max_calls
        self.recorder = recorder
        #: Labels whose window has opened (or failed to): each label is recorded at most once.
        self.done: set[str] = set()
        self._window: Window | None = None
        self._profiler: Recorder | None = None

    @classmethod
    def from_env(cls, stage: str, device: torch.device, environ: Mapping[str, str] = os.environ) -> "TraceWindow | None":
        """A window when ``GEN3D_PROFILE_DIR`` is set and the stage runs on CUDA, else None."""
        directory = environ.get(PROFILE_DIR_ENV)
        if not directory or device.type != "cuda":
            return None
        max_calls = int(environ.get(MAX_CALLS_ENV, DEFAULT_MAX_CALLS))
        logger.info("%s: GPU trace windows from %s (at most %d calls each)", stage, directory, max_calls)
        return cls(stage, device, Path(directory), max_calls)

    def prime(self) -> None:
        """Start and stop a profiler once, so that CUPTI's first-use set-up does not land in a window."""
        profiler = self.recorder()
        profiler.start()
        profiler.stop()

    @property
    def recording(self) -> bool:
        return self._window is not None

    def _requested_label(self) -> str | None:
        """The label ``START`` asks for, if it is new and ``STOP`` is absent."""
        if (self.directory / STOP_FILE).exists():
            return None
        try:
            label = (self.directory / START_FILE).read_text().strip()
        except OSError:
            return None
        return label if label and label not in self.done else None

    def before_call(self) -> None:
        """Start recording if a new window is open."""
        if self.recording:
            return
        label = self._requested_label()
        if label is None:
            return
        self.done.add(label)  # one attempt per label, whatever happens
        try:
            profiler = self.recorder()
            profiler.start()
        except Exception as err:  # noqa: BLE001  # a trace must never fail a request
            logger.warning("%s: GPU trace window %r could not start: %s", self.stage, label, err)
            return
        self._profiler, self._window = profiler, Window(label, time.time_ns())
        logger.info("%s: GPU trace window %r started", self.stage, label)

    def after_call(self, method: str, items: int, start_ns: int, end_ns: int) -> None:
        """Record the call; close the window when ``STOP`` is there or the window is full."""
        if self._window is None:
            return
        self._window.calls.append(CallRecord(method, items, start_ns, end_ns))
        if len(self._window.calls) >= self.max_calls:
            self.finish()
        else:
            self.poll()

    def poll(self) -> None:
        """Close the window if ``STOP`` appeared (health checks call this between requests)."""
        if self._window is not None and (self.directory / STOP_FILE).exists():
            self.finish()

    def finish(self) -> None:
        """Stop the profiler and write the window's trace and calls."""
        window, profiler = self._window, self._profiler
        if window is None or profiler is None:
            return
        self._window, self._profiler = None, None
        try:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # kernels still running belong in the trace
            profiler.stop()
            end_ns = time.time_ns()
            folder = self.directory / window.label
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{self.stage}-{os.getpid()}"
            profiler.export_chrome_trace(str(folder / f"{name}{TRACE_SUFFIX}"))
            # The calls file comes last: its presence tells a reader the trace is complete.
            partial = folder / f"{name}{CALLS_SUFFIX}.partial"
            partial.write_text(json.dumps(self.summary(window, end_ns)))
            partial.replace(folder / f"{name}{CALLS_SUFFIX}")
        except Exception as err:  # noqa: BLE001  # a trace must never fail a request
            logger.warning("%s: GPU trace window %r could not be written: %s", self.stage, window.label, err)
            return
        logger.info("%s: GPU trace window %r written (%d calls)", self.stage, window.label, len(window.calls))

    def summary(self, window: Window, end_ns: int) -> dict[str, Any]:
        """The calls file's content."""
        return {
            "stage": self.stage,
            "pid": os.getpid(),
            "device": str(self.device),
            "label": window.label,
            "start_ns": window.start_ns,
            "end_ns": end_ns,
            "calls": [asdict(call) for call in window.calls],
        }
