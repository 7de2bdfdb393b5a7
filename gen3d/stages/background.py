"""Stage ``background``: rembg background removal with a named session, then the 3D model's preprocessing.

The rembg session is always created by name (rembg's implicit default model is non-commercial);
its class decides the model's pre- and post-processing. The mode decides the weights:

- ``real``: rembg's own file for the session (downloaded into ``REMBG_HOME`` when absent), or
  ``model_path`` for ``u2net_custom``.
- ``random``: the session's real architecture at full size with random weights
  (``gen3d.models.segmentation.u2net_onnx``; ``u2net`` and ``isnet-general-use``), for speed and memory runs.
- ``tiny``: ``u2net_custom`` with the hand-weighted net of ``gen3d.models.segmentation.tiny_onnx`` (tests, CPU).

The device decides the runtime: ``cpu`` runs rembg's session through onnxruntime (``threads``
caps its threads); ``cuda`` runs the same ONNX graph with torch on the GPU in fp16
(``gen3d.models.segmentation.mask_predictors.TorchPredictor``), replayed as a CUDA graph.
"""

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rembg.bg import post_process
from rembg.sessions import sessions as rembg_sessions
from rembg.sessions.base import BaseSession
from rembg.sessions.u2net_custom import U2netCustomSession

from gen3d.config import BackgroundConfig
from gen3d.devices import cap_memory_gib, resolve_device
from gen3d.errors import InputError, WeightsUnavailableError
from gen3d.imaging import has_transparency, prepare_conditioning_image, prepare_cutout
from gen3d.models.segmentation.mask_predictors import (
    RembgPredictor,
    TorchPredictor,
    session_spec,
)
from gen3d.models.segmentation.onnx_torch import OnnxTorchModule
from gen3d.models.segmentation.tiny_onnx import (
    tiny_model_filename,
    write_tiny_segmentation_model,
)
from gen3d.models.segmentation.u2net_onnx import ARCHITECTURES, ensure_random_model
from gen3d.parts.checkpoints import check_sha256
from gen3d.results import PreparedImage

logger = logging.getLogger(__name__)

CUSTOM_SESSION = "u2net_custom"
#: Alpha from which a pixel counts as part of the object when measuring foreground coverage.
OPAQUE_ALPHA = 128
#: Network precision on CUDA. The imgly IS-Net is an fp16 graph; keep fp16 only while
#: scripts/bench_background.py scores its masks at IoU >= 0.99 against fp32 (docs/background.md).
CUDA_DTYPE = torch.float16
#: Where random-weight nets are cached, under rembg's home (never a real model's directory).
RANDOM_MODEL_DIR = "gen3d-random"
#: Predictor type: (H, W, 3) uint8 RGB -> (H, W) uint8 mask.
MaskPredictor = RembgPredictor | TorchPredictor


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
        write_tiny_segmentation_model(path)
    return path


def ensure_weights(cls: type[BaseSession], name: str) -> Path:
    """Download a named model into rembg's cache unless present, mapping failures to a clear error.

    rembg checks a download's md5; a file already in place is used as it is.

    Returns:
        The model file.

    Raises:
        WeightsUnavailableError: naming the model, where rembg looks for it and how to fetch it.
    """
    try:
        return Path(cls.download_models())
    except (OSError, ValueError) as error:  # requests errors are OSErrors; pooch hash mismatch is ValueError
        model_dir = cls.model_dir()
        raise WeightsUnavailableError(
            f"background: rembg model {name!r} is not cached in {model_dir} and could not be downloaded "
            f"({type(error).__name__}: {error}). On a machine with network access run `rembg d {name}` and copy "
            f"{model_dir}/{name}.onnx to this machine's rembg model directory (REMBG_HOME)."
        ) from error


def model_file(cfg: BackgroundConfig, cls: type[BaseSession]) -> Path:
    """The ONNX file the session runs in this mode (see the module docstring).

    Raises:
        ValueError: a mode/session pair without a model (random needs a full-size architecture,
            tiny runs ``u2net_custom``); ``CheckpointError`` when the file's sha256 is not the pinned one.
        WeightsUnavailableError: real weights neither cached nor downloadable.
    """
    if cfg.session == CUSTOM_SESSION and cfg.mode != "random":
        return custom_model_path(cfg)
    if cfg.mode == "real":
        path = ensure_weights(cls, cfg.session)
        # rembg checks an md5 only on download; the pin also covers a file copied in by hand.
        check_sha256(path, cfg.sha256)
        return path
    if cfg.mode == "random" and cfg.session in ARCHITECTURES:
        logger.warning("background: mode random runs %s at full size with random weights", cfg.session)
        directory = Path(BaseSession.rembg_home()) / "models" / RANDOM_MODEL_DIR
        return ensure_random_model(cfg.session, session_spec(cfg.session).size, directory)
    if cfg.mode == "random":
        raise ValueError(
            f"background: mode random needs a session with a full-size random architecture, one of "
            f"{list(ARCHITECTURES)}; got {cfg.session!r}"
        )
    raise ValueError(f"background: mode tiny runs session {CUSTOM_SESSION!r} (the hand-weighted net), got {cfg.session!r}")


def session_reading(cls: type[BaseSession], path: Path) -> type[BaseSession]:
    """rembg's session class ``cls`` with its weights read from ``path``.

    ``download_models`` is the hook through which every rembg session finds its file, so the
    subclass keeps the session's own pre- and post-processing while loading a random-weight,
    tiny or custom model (rembg's named sessions take no ``model_path``).
    """
    return type(f"{cls.__name__}From{path.stem}", (cls,), {"download_models": classmethod(lambda _, *a, **k: str(path))})


def build_predictor(cfg: BackgroundConfig) -> MaskPredictor:
    """The session of ``cfg`` on its device: rembg through onnxruntime on ``cpu``, torch on ``cuda``.

    Raises:
        ValueError: bad session, mode, or device (a CUDA device that does not exist, or a session
            the torch path does not know); never falls back to another device.
        WeightsUnavailableError: real weights neither cached nor downloadable.
    """
    cls = session_class(cfg.session)
    try:
        device = resolve_device(cfg.device)
    except RuntimeError as error:
        raise ValueError(f"background.device: {error}") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"background.device: expected 'cpu', 'cuda' or 'cuda:N', got {cfg.device!r}")
    spec = session_spec(cfg.session) if device.type == "cuda" else None
    path = model_file(cfg, cls)
    if spec is None:
        options = session_options(cfg.threads)
        # model_path only matters to u2net_custom, which refuses to start without it.
        session = session_reading(cls, path)(cfg.session, options, providers=["CPUExecutionProvider"], model_path=str(path))
        logger.info("background: rembg session %s on onnxruntime CPU (%s)", cfg.session, path)
        return RembgPredictor(session)
    cap_memory_gib(device, cfg.gpu_memory_gib)
    net = OnnxTorchModule(onnx.load(str(path)), (1, 3, spec.size, spec.size))
    logger.info("background: session %s on %s with torch in %s (%s)", cfg.session, device, CUDA_DTYPE, path)
    return TorchPredictor(net, spec, device, CUDA_DTYPE, channels_last=True, cuda_graphs=True)


class BackgroundRemoval:
    """Stage ``background``: cut the object out (unless already transparent) and prepare it for the 3D model.

    Args:
        cfg: stage configuration.
        predictor: the session's mask predictor on its device (see ``build_predictor``).
    """

    def __init__(self, cfg: BackgroundConfig, predictor: MaskPredictor) -> None:
        self.cfg = cfg
        self.predictor = predictor
        self.device = predictor.device

    def warmup(self) -> None:
        """Run the session once: onnxruntime optimises its graph, the CUDA path captures its graph."""
        probe = np.full((self.cfg.size, self.cfg.size, 3), 255, dtype=np.uint8)
        probe[self.cfg.size // 4 : -self.cfg.size // 4, self.cfg.size // 4 : -self.cfg.size // 4] = (200, 30, 30)
        self.remove_background(probe)

    @classmethod
    def from_config(cls, cfg: BackgroundConfig) -> "BackgroundRemoval":
        """Create the named rembg session described by ``cfg`` (downloading real weights if needed).

        Raises:
            ValueError: misconfiguration (unknown or empty session, bad mode, device or model_path).
            WeightsUnavailableError: real weights neither cached nor downloadable.
        """
        return cls(cfg, build_predictor(cfg))

    def check_inputs(self, image: np.ndarray) -> None:
        """Raise ``InputError(field="image")`` unless ``image`` is uint8 (H, W, 3) or (H, W, 4)."""
        if not isinstance(image, np.ndarray):
            raise InputError("image", f"expected a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
            raise InputError("image", f"expected uint8 (H, W, 3) or (H, W, 4), got {image.dtype} {image.shape}")

    def remove_background(self, rgb: np.ndarray) -> np.ndarray:
        """Predict the session's mask and attach it as alpha.

        Only the mask is taken from rembg: its cut-out premultiplies colour by the mask, and the
        grey composite would multiply soft edges a second time.

        Args:
            rgb: (H, W, 3) uint8.

        Returns:
            (H, W, 4) uint8, original colours with the predicted mask as alpha.
        """
        mask = self.predictor(rgb)
        if mask.shape != rgb.shape[:2]:
            raise RuntimeError(f"the mask predictor returned shape {mask.shape} for an image of shape {rgb.shape}")
        if self.cfg.post_process_mask:
            mask = post_process(mask)
        return np.dstack([rgb, mask])

    def process(self, image: np.ndarray, keep_cutout: bool = False) -> PreparedImage:
        """Remove the background if needed and build the 3D model's conditioning image.

        Args:
            image: uint8 (H, W, 3) RGB or (H, W, 4) RGBA. RGBA with any alpha below 255 is taken
                as already cut out and skips background removal.
            keep_cutout: also return the framed RGBA cut-out (``PreparedImage.cutout``).

        Returns:
            ``PreparedImage`` with a (size, size, 3) uint8 image.

        Raises:
            InputError: ``field="image"`` (422) for a malformed array, or when no object is left
                (opaque share below ``min_foreground_fraction``, or fully transparent).
        """
        self.check_inputs(image)
        removed = not has_transparency(image)
        rgba = self.remove_background(image[:, :, :3]) if removed else image
        self._check_foreground(rgba[:, :, 3], removed)
        prepared = prepare_conditioning_image(rgba, self.cfg.size, self.cfg.foreground_ratio, self.cfg.backdrop)
        cutout = prepare_cutout(rgba, self.cfg.size, self.cfg.foreground_ratio) if keep_cutout else None
        return PreparedImage(image=prepared, removed_background=removed, cutout=cutout)

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
