"""Stage ``background``: rembg background removal with a named session, then TripoSR preprocessing.

The rembg session is always created by name (rembg's implicit default model is non-commercial).
Tiny and random presets use ``u2net_custom`` with the hand-weighted net of ``gen3d.tiny_onnx``,
written into rembg's model directory when absent, so they run rembg's real session code offline.
"""

import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import rembg
import torch
from rembg.sessions import sessions as rembg_sessions
from rembg.sessions.base import BaseSession
from rembg.sessions.u2net_custom import U2netCustomSession

from gen3d.config import BackgroundConfig
from gen3d.errors import InputError, WeightsUnavailableError
from gen3d.imaging import has_transparency, prepare_conditioning_image
from gen3d.results import PreparedImage
from gen3d.tiny_onnx import tiny_model_filename, write_tiny_segmentation_model

logger = logging.getLogger(__name__)

CUSTOM_SESSION = "u2net_custom"
#: Alpha from which a pixel counts as part of the object when measuring foreground coverage.
OPAQUE_ALPHA = 128


def onnx_providers(device: str) -> list[str | tuple[str, dict[str, int]]]:
    """onnxruntime execution providers for a torch-style device string (``cpu``, ``cuda``, ``cuda:1``).

    Raises:
        ValueError: for an unknown device, or ``cuda`` when onnxruntime has no CUDA provider
            (never a silent CPU fallback).
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise ValueError(
                f"background: device {device!r} needs onnxruntime with CUDAExecutionProvider, got {available}; "
                "install onnxruntime-gpu or set background.device: cpu"
            )
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise ValueError(f"background: device expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def session_options(threads: int | None) -> ort.SessionOptions:
    """onnxruntime options; ``threads`` caps intra-op threads so stages sharing a CPU don't oversubscribe."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def session_class(name: str) -> type[BaseSession]:
    """The rembg session class for ``name``; refuses empty names and sessions that upload images.

    Of rembg's ``*_custom`` sessions only ``u2net_custom`` is supported (the config has one
    ``model_path`` and the tiny net follows u2net's input convention).

    Raises:
        ValueError: naming the known local sessions.
    """
    local = sorted(
        key
        for key, cls in rembg_sessions.items()
        if cls.is_local() and not cls.requires_credentials() and (key == CUSTOM_SESSION or not key.endswith("_custom"))
    )
    if not name:
        raise ValueError(f"background: session must name a rembg model explicitly, one of {local}")
    if name not in local:
        raise ValueError(f"background: session expected one of {local} (local, no credentials), got {name!r}")
    return rembg_sessions[name]


def custom_model_path(cfg: BackgroundConfig) -> Path:
    """Resolve ``u2net_custom``'s ONNX file, writing the tiny net for non-real modes when absent.

    rembg only loads custom models from inside its model directory (``REMBG_HOME``, by default
    ``~/.rembg``), so the default path is ``<home>/models/u2net_custom/gen3d-tiny-seg-v<N>.onnx``.

    Raises:
        ValueError: ``model_path`` lies outside rembg's model directory.
        WeightsUnavailableError: real mode and the file does not exist.
    """
    default = Path(U2netCustomSession.model_dir()) / tiny_model_filename()
    path = Path(cfg.model_path).expanduser() if cfg.model_path else default
    try:
        U2netCustomSession.validate_model_path(model_path=str(path))
    except ValueError as error:
        raise ValueError(
            f"background: model_path {str(path)!r} rejected by rembg: {error} (set REMBG_HOME to move it)"
        ) from error
    if cfg.mode == "real":
        if not path.is_file():
            raise WeightsUnavailableError(f"background: u2net_custom model_path {str(path)!r} does not exist")
        return path
    if cfg.model_path is None or not path.is_file():
        if cfg.mode == "random":
            logger.warning("background: mode random uses the tiny hand-weighted segmentation net at %s", path)
        write_tiny_segmentation_model(path)
    return path


def ensure_weights(cls: type[BaseSession], name: str) -> None:
    """Download a named model into rembg's cache unless present, mapping failures to a clear error.

    Raises:
        WeightsUnavailableError: naming the model, where rembg looks for it and how to fetch it.
    """
    try:
        cls.download_models()
    except (OSError, ValueError) as error:  # requests errors are OSErrors; pooch hash mismatch is ValueError
        model_dir = cls.model_dir()
        raise WeightsUnavailableError(
            f"background: rembg model {name!r} is not cached in {model_dir} and could not be downloaded "
            f"({type(error).__name__}: {error}). On a machine with network access run `rembg d {name}` and copy "
            f"{model_dir}/{name}.onnx to this machine's rembg model directory (REMBG_HOME)."
        ) from error


class BackgroundRemoval:
    """Stage ``background``: cut the object out (unless already transparent) and prepare it for TripoSR.

    Args:
        cfg: stage configuration.
        session: a rembg session created by name (see ``from_config``).
    """

    def __init__(self, cfg: BackgroundConfig, session: BaseSession) -> None:
        self.cfg = cfg
        self.session = session
        self.device = torch.device(cfg.device)

    def warmup(self) -> None:
        """Run the session once so the first request pays no graph-optimisation cost."""
        probe = np.full((self.cfg.size, self.cfg.size, 3), 255, dtype=np.uint8)
        probe[self.cfg.size // 4 : -self.cfg.size // 4, self.cfg.size // 4 : -self.cfg.size // 4] = (200, 30, 30)
        self.remove_background(probe)

    @classmethod
    def from_config(cls, cfg: BackgroundConfig) -> "BackgroundRemoval":
        """Create the named rembg session described by ``cfg`` (downloading real weights if needed).

        Raises:
            ValueError: misconfiguration (unknown or empty session, bad device, bad model_path).
            WeightsUnavailableError: real weights neither cached nor downloadable.
        """
        rembg_class = session_class(cfg.session)
        providers = onnx_providers(cfg.device)
        kwargs: dict[str, str] = {}
        if cfg.session == CUSTOM_SESSION:
            kwargs["model_path"] = str(custom_model_path(cfg))
        else:
            ensure_weights(rembg_class, cfg.session)
        session = rembg.new_session(cfg.session, sess_opts=session_options(cfg.threads), providers=providers, **kwargs)
        active = session.inner_session.get_providers()
        if cfg.device != "cpu" and "CUDAExecutionProvider" not in active:
            raise ValueError(f"background: device {cfg.device!r} requested but onnxruntime runs on {active}")
        logger.info("background: rembg session %s on %s (%s)", cfg.session, active, kwargs.get("model_path", "cached"))
        return cls(cfg, session)

    def check_inputs(self, image: np.ndarray) -> None:
        """Raise ``InputError(field="image")`` unless ``image`` is uint8 (H, W, 3) or (H, W, 4)."""
        if not isinstance(image, np.ndarray):
            raise InputError("image", f"expected a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
            raise InputError("image", f"expected uint8 (H, W, 3) or (H, W, 4), got {image.dtype} {image.shape}")

    def remove_background(self, rgb: np.ndarray) -> np.ndarray:
        """Run the rembg session and attach its mask as alpha.

        Only the mask is taken from rembg: its cut-out premultiplies colour by the mask, and the
        grey composite would multiply soft edges a second time.

        Args:
            rgb: (H, W, 3) uint8.

        Returns:
            (H, W, 4) uint8, original colours with the predicted mask as alpha.
        """
        mask = rembg.remove(rgb, session=self.session, only_mask=True, post_process_mask=self.cfg.post_process_mask)
        mask = np.asarray(mask, dtype=np.uint8)
        if mask.shape != rgb.shape[:2]:
            raise RuntimeError(f"rembg returned a mask of shape {mask.shape} for an image of shape {rgb.shape}")
        return np.dstack([rgb, mask])

    def process(self, image: np.ndarray) -> PreparedImage:
        """Remove the background if needed and build TripoSR's conditioning image.

        Args:
            image: uint8 (H, W, 3) RGB or (H, W, 4) RGBA. RGBA with any alpha below 255 is taken
                as already cut out and skips background removal.

        Returns:
            ``PreparedImage`` with a (size, size, 3) uint8 image.

        Raises:
            InputError: ``field="image"`` (422) for a malformed array, or when no object is left
                (opaque share below ``min_foreground_fraction``, or fully transparent).
        """
        start = time.perf_counter()
        self.check_inputs(image)
        removed = not has_transparency(image)
        rgba = self.remove_background(image[:, :, :3]) if removed else image
        self._check_foreground(rgba[:, :, 3], removed)
        prepared = prepare_conditioning_image(rgba, self.cfg.size, self.cfg.foreground_ratio)
        return PreparedImage(image=prepared, removed_background=removed, seconds=time.perf_counter() - start)

    def _check_foreground(self, alpha: np.ndarray, removed: bool) -> None:
        """Refuse images whose opaque share is below ``cfg.min_foreground_fraction`` or zero."""
        fraction = float(np.mean(alpha >= OPAQUE_ALPHA))
        if fraction < self.cfg.min_foreground_fraction or not alpha.any():
            source = "after background removal" if removed else "in the image's alpha channel"
            raise InputError(
                "image",
                f"expected a visible object covering >= {self.cfg.min_foreground_fraction:.2%} of the image, "
                f"got {fraction:.3%} opaque pixels {source}",
            )
