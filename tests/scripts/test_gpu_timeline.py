"""scripts/gpu_timeline.py on synthetic kineto traces: one clock from different time bases, busy
share, concurrency, idle gaps, GPU time per item by stage, and the time-slicing table."""

import json
from pathlib import Path

import numpy as np
import pytest

from scripts import gpu_timeline

SECOND_NS = 1_000_000_000
T0_NS = 1_800_000_000 * SECOND_NS  # a Unix time


def write_replica(
    folder: Path, name: str, stage: str, base_ns: int, calls: list[tuple[str, int, float, float]],
    kernels_ms: list[tuple[float, float]], span_ms: tuple[float, float] = (0.0, 100.0),
) -> None:
    """A replica's calls file and kineto trace; times in ms after T0, kernels stored relative to ``base_ns``."""
    folder.mkdir(parents=True, exist_ok=True)

    def ns(ms: float) -> int:
        return T0_NS + int(ms * 1e6)

    events = [{"ph": "M", "name": "process_name", "pid": 0, "tid": 0, "ts": 0.0}]
    for start, end in kernels_ms:
        ts_us = (ns(start) - base_ns) / 1e3
        events.append({"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": ts_us, "dur": (end - start) * 1e3})
    events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "pid": 1, "tid": 1, "ts": 1.0, "dur": 5.0})
    (folder / f"{name}.trace.json").write_text(json.dumps({"baseTimeNanoseconds": base_ns, "traceEvents": events}))
    meta = {
        "stage": stage, "pid": 1, "device": "cuda:0", "label": folder.name,
        "start_ns": ns(span_ms[0]), "end_ns": ns(span_ms[1]),
        "calls": [{"method": m, "items": i, "start_ns": ns(s), "end_ns": ns(e)} for m, i, s, e in calls],
    }
    (folder / f"{name}.calls.json").write_text(json.dumps(meta))


@pytest.fixture
def load_window(tmp_path: Path) -> Path:
    """100 ms: FLUX busy 0-40 and 50-90 (two batches of 2), TripoSR 30-45 (generate) and 60-70 (bake).

    The two traces have time bases a day apart; only their sum with the event times is the clock.
    """
    folder = tmp_path / "load8"
    write_replica(
        folder, "text_to_image-11", "text_to_image", T0_NS - 86_400 * SECOND_NS,
        calls=[("generate_batch", 2, 0, 41), ("generate_batch", 2, 50, 91)],
        kernels_ms=[(0, 20), (20, 40), (50, 90)],
    )
    write_replica(
        folder, "image_to_3d-12", "image_to_3d", T0_NS - 5 * SECOND_NS,
        calls=[("generate", 1, 29, 46), ("bake", 1, 59, 71)],
        kernels_ms=[(30, 35), (34, 45), (60, 70)],
    )
    return folder


def test_replicas_are_put_on_one_clock_and_checked(load_window: Path) -> None:
    flux, triposr = sorted(gpu_timeline.load_window(load_window), key=lambda r: r.stage, reverse=True)
    assert flux.stage == "text_to_image" and triposr.stage == "image_to_3d"
    # Times are µs after the earliest recording's start (T0 here).
    np.testing.assert_allclose(flux.kernels, [[0, 20e3], [20e3, 40e3], [50e3, 90e3]], atol=1e-3)
    np.testing.assert_allclose(triposr.kernels[:, 0], [30e3, 34e3, 60e3], atol=1e-3)
    assert flux.misaligned == 0.0 and triposr.misaligned == 0.0


def test_card_busy_concurrency_and_gaps(load_window: Path) -> None:
    card = gpu_timeline.card_summary(gpu_timeline.load_window(load_window))
    # Busy: 0-45 and 50-90 of 100 ms; two processes at once during 30-40 and 60-70.
    assert card["busy_fraction"] == pytest.approx(0.85)
    assert card["concurrent_fraction_of_busy"] == pytest.approx(20 / 85)
    assert card["gaps"]["count"] == 2 and card["gaps"]["total_ms"] == pytest.approx(15.0)
    assert card["gaps"]["long_count"] == 2
    # Four images whose calls' midpoints lie in the window: 4 assets in 0.1 s.
    assert card["assets"] == 4 and card["assets_per_s"] == pytest.approx(40.0)
    assert card["busy_ms_per_asset"] == pytest.approx(85 / 4)


def test_gpu_time_per_item_by_stage_and_the_bake_row(load_window: Path) -> None:
    rows = gpu_timeline.stage_rows(gpu_timeline.load_window(load_window))
    assert list(rows) == ["text_to_image", "image_to_3d", "bake"]
    assert rows["text_to_image"]["items"] == 4 and rows["text_to_image"]["calls"] == 2
    assert rows["text_to_image"]["gpu_ms_per_item"] == pytest.approx(80 / 4)
    assert rows["text_to_image"]["wall_ms_per_call"] == pytest.approx(41.0)
    assert rows["image_to_3d"]["gpu_ms_per_call"] == pytest.approx(15.0)  # 30-35 and 34-45 overlap: their union
    assert rows["bake"]["gpu_ms_per_item"] == pytest.approx(10.0)


def test_time_slicing_table_compares_load_with_alone(tmp_path: Path, load_window: Path) -> None:
    alone = tmp_path / "alone"
    write_replica(alone, "text_to_image-11", "text_to_image", T0_NS, [("generate_batch", 1, 0, 16)], [(0, 16)], (0, 200))
    write_replica(alone, "image_to_3d-12", "image_to_3d", T0_NS, [("generate", 1, 20, 26), ("bake", 1, 40, 45)],
                  [(20, 25), (40, 45)], (0, 200))  # fmt: skip
    report = gpu_timeline.analyse(load_window, alone)
    slicing = report["slicing"]
    assert slicing["text_to_image"]["gpu_stretch"] == pytest.approx(20 / 16)
    assert slicing["image_to_3d"]["gpu_stretch"] == pytest.approx(3.0)
    assert slicing["bake"]["wall_stretch"] == pytest.approx(12 / 5)
    text = gpu_timeline.markdown(report)
    assert "| image_to_3d | 5.0 → 15.0 | 3.00× |" in text and "85.0%" in text


def test_main_writes_the_report(tmp_path: Path, load_window: Path, capsys: pytest.CaptureFixture) -> None:
    assert gpu_timeline.main([str(load_window), "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert saved["card"]["assets"] == 4 and "| text_to_image | 2 | 4 |" in capsys.readouterr().out


def test_unalignable_or_missing_traces_are_refused(tmp_path: Path, load_window: Path) -> None:
    trace = load_window / "image_to_3d-12.trace.json"
    trace.write_text(json.dumps({"traceEvents": []}))
    with pytest.raises(ValueError, match="baseTimeNanoseconds"):
        gpu_timeline.load_window(load_window)
    assert gpu_timeline.main([str(tmp_path / "empty")]) == 2


def test_kernels_outside_the_recording_flag_misaligned_clocks(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    write_replica(folder, "background-3", "background", T0_NS, [("process", 1, 0, 10)], [(0, 5), (500, 505)], (0, 100))
    (replica,) = gpu_timeline.load_window(folder)
    assert replica.misaligned == pytest.approx(0.5)
