"""Tests for gen3d.models.segmentation.tiny_onnx: the hand-weighted segmentation net runs in onnxruntime and segments."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from gen3d.models.segmentation.tiny_onnx import (
    build_tiny_segmentation_model,
    tiny_model_filename,
    write_tiny_segmentation_model,
)

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def normalised(rgb: np.ndarray) -> np.ndarray:
    """rembg's u2net input convention: scale by the max, ImageNet mean/std, (1, 3, H, W)."""
    pixels = rgb.astype(np.float32).transpose(2, 0, 1) / rgb.max()
    return ((pixels - MEAN) / STD)[None]


def test_mask_separates_object_from_plain_background(tmp_path: Path) -> None:
    path = write_tiny_segmentation_model(tmp_path / tiny_model_filename())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rgb = np.full((96, 128, 3), (120, 130, 140), np.uint8)
    rgb[30:70, 40:100] = (220, 60, 30)
    (mask,) = session.run(None, {"x": normalised(rgb)})
    assert mask.shape == (1, 1, 96, 128)
    inside, outside = mask[0, 0, 35:65, 45:95], mask[0, 0, :20]
    assert inside.min() > 0.9
    assert outside.max() < 0.1


def test_writer_is_idempotent_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "nested" / tiny_model_filename()
    write_tiny_segmentation_model(path)
    first = path.stat().st_mtime_ns
    write_tiny_segmentation_model(path)
    assert path.stat().st_mtime_ns == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    assert path.stat().st_mode & 0o777 == 0o644
    path.write_bytes(b"stale")
    write_tiny_segmentation_model(path)
    assert onnx.load(str(path)) == build_tiny_segmentation_model()
