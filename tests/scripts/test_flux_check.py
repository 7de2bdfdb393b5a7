"""scripts/flux_check.py on the tiny preset (CPU): the report's independence, speed and backend rows."""

import json
from pathlib import Path

import pytest

from scripts import flux_check


def test_tiny_run_reports_independence_speed_and_backends(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--out", str(tmp_path), "--preset", "tiny", "--batch-sizes", "1", "2", "--repeats", "1",
            "--backends", "native", "warp-speed"]  # fmt: skip
    assert flux_check.main(argv) == 0
    report = json.loads((tmp_path / "flux_check.json").read_text())
    pair = report["independence"]["2"]
    assert pair["pairs"] == 3 and pair["max"] <= 1 and pair["mean"] <= 0.01  # CPU fp32: rounding at most
    assert set(report["speed"]) == {"1", "2"} and report["speed"]["2"]["call_s"] > 0
    assert report["backends"]["native"]["psnr_db"] is None  # the default backend is SDPA: identical images
    assert "attention_backend" in report["backends"]["warp-speed"]["error"]
    table = capsys.readouterr().out
    assert "| 2 |" in table and "| warp-speed | – | failed:" in table


def test_image_difference_and_worst_case() -> None:
    import numpy as np

    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    d = flux_check.difference(b, a)
    assert d["max"] == 255 and d["mean"] == pytest.approx(255 / 48)
    assert d["psnr_db"] == pytest.approx(10 * np.log10(48))
    assert flux_check.difference(a, a)["psnr_db"] is None
    assert flux_check.worst([d, flux_check.difference(a, a)]) == {**d, "pairs": 2}
