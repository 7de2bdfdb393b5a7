"""gen3d.service.gpu_trace: a replica records between START and STOP, once per label, and writes
its trace and calls; off unless GEN3D_PROFILE_DIR is set for a CUDA stage."""

import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from gen3d.service.gpu_trace import START_FILE, STOP_FILE, TraceWindow


class FakeProfiler:
    """Records what the window asks of a profiler; its trace is a minimal kineto file."""

    log: ClassVar[list[str]] = []

    def start(self) -> None:
        self.log.append("start")

    def stop(self) -> None:
        self.log.append("stop")

    def export_chrome_trace(self, path: str) -> None:
        self.log.append("export")
        Path(path).write_text(json.dumps({"baseTimeNanoseconds": 0, "traceEvents": []}))


@pytest.fixture
def window(tmp_path: Path) -> TraceWindow:
    FakeProfiler.log = []
    return TraceWindow("text_to_image", torch.device("cpu"), tmp_path, max_calls=3, recorder=FakeProfiler)


def call(window: TraceWindow, index: int, items: int = 1) -> None:
    window.before_call()
    window.after_call("generate_batch", items, index * 100, index * 100 + 50)


def test_off_without_the_variable_or_on_a_cpu_stage(tmp_path: Path) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert TraceWindow.from_env("background", cuda, {}) is None
    assert TraceWindow.from_env("export", cpu, {"GEN3D_PROFILE_DIR": str(tmp_path)}) is None
    window = TraceWindow.from_env("background", cuda, {"GEN3D_PROFILE_DIR": str(tmp_path), "GEN3D_PROFILE_MAX_CALLS": "9"})
    assert window is not None and window.directory == tmp_path and window.max_calls == 9


def test_records_between_start_and_stop_and_writes_calls_last(window: TraceWindow, tmp_path: Path) -> None:
    call(window, 0)
    assert FakeProfiler.log == [] and not window.recording  # no START yet
    (tmp_path / START_FILE).write_text("load8\n")
    call(window, 1, items=2)
    call(window, 2)
    assert window.recording and FakeProfiler.log == ["start"]
    (tmp_path / STOP_FILE).touch()
    window.poll()  # a health check closes the idle replica's window
    assert not window.recording and FakeProfiler.log == ["start", "stop", "export"]
    (calls_file,) = (tmp_path / "load8").glob("*.calls.json")
    assert calls_file.name.startswith("text_to_image-") and not list((tmp_path / "load8").glob("*.partial"))
    saved = json.loads(calls_file.read_text())
    assert saved["stage"] == "text_to_image" and saved["label"] == "load8"
    assert [(c["items"], c["start_ns"]) for c in saved["calls"]] == [(2, 100), (1, 200)]
    assert saved["start_ns"] <= saved["end_ns"]
    assert (tmp_path / "load8" / calls_file.name.replace(".calls.json", ".trace.json")).is_file()


def test_a_label_is_recorded_once_and_a_new_label_opens_the_next_window(window: TraceWindow, tmp_path: Path) -> None:
    (tmp_path / START_FILE).write_text("alone")
    call(window, 0)
    (tmp_path / STOP_FILE).touch()
    call(window, 1)  # the call after STOP closes the window
    (tmp_path / STOP_FILE).unlink()
    call(window, 2)
    assert not window.recording  # "alone" is done
    (tmp_path / START_FILE).write_text("load8")
    call(window, 3)
    assert window.recording and window.done == {"alone", "load8"}  # labels are taken when their window opens


def test_a_full_window_closes_itself(window: TraceWindow, tmp_path: Path) -> None:
    (tmp_path / START_FILE).write_text("load8")
    for index in range(4):
        call(window, index)
    assert FakeProfiler.log == ["start", "stop", "export"] and window.done == {"load8"}
    saved = json.loads(next((tmp_path / "load8").glob("*.calls.json")).read_text())
    assert len(saved["calls"]) == 3


def test_no_window_opens_while_stop_is_present(window: TraceWindow, tmp_path: Path) -> None:
    (tmp_path / START_FILE).write_text("load8")
    (tmp_path / STOP_FILE).touch()
    call(window, 0)
    assert not window.recording and FakeProfiler.log == []


def test_a_profiler_that_fails_never_fails_the_call(tmp_path: Path) -> None:
    class Broken(FakeProfiler):
        def start(self) -> None:
            raise RuntimeError("CUPTI_ERROR_NOT_SUPPORTED")

    class BrokenExport(FakeProfiler):
        def export_chrome_trace(self, path: str) -> None:
            raise OSError("disk full")

    for recorder in (Broken, BrokenExport):
        window = TraceWindow("background", torch.device("cpu"), tmp_path / recorder.__name__, recorder=recorder)
        window.directory.mkdir()
        (window.directory / START_FILE).write_text("load8")
        call(window, 0)
        (window.directory / STOP_FILE).touch()
        call(window, 1)
        assert not window.recording and window.done == {"load8"}
        assert not list(window.directory.rglob("*.calls.json"))
