"""Safe image decoding and the pure image maths of TripoSR's reference preprocessing.

Decoding refuses, with an ``InputError`` naming the ``image`` field, anything that is not a
complete image of a sane size: bytes no allowed decoder recognises (415), truncated or corrupt
data (422), more pixels than allowed, judged from the header before decoding (413), and images
with a side under ``min_side`` (422). Multi-frame files (animated GIF/PNG/WebP, multi-page TIFF,
camera MPO) are not refused: their first frame is used, the still image viewers show.

Preprocessing (all arrays uint8 unless noted): crop to the alpha bounding box -> pad to a centred
square -> pad so the object spans ``foreground_ratio`` of the side -> composite on grey 0.5 ->
resize (bilinear, antialiased).
"""

import base64
import io
import logging
import re
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from gen3d.errors import InputError

logger = logging.getLogger(__name__)

#: Decoders tried by ``Image.open``; anything else (EPS needs Ghostscript, etc.) is refused.
#: Camera MPO files open through the JPEG decoder.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
SIXTEEN_BIT_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
#: Background grey of the conditioning image, on the [0, 1] scale.
GREY = 0.5
#: Whitespace allowed around a base64 image (ASCII only, as the pattern below says).
BASE64_SPACE = " \t\n\r"
_TOKEN = "[A-Za-z0-9_.+-]+"
#: The ``data:`` URL prefix of a base64 image: an ``image/*`` media type, parameters, ``;base64,``.
DATA_URL_PREFIX = f"data:image/{_TOKEN}(;{_TOKEN}={_TOKEN})*;base64,"
#: Standard padded base64 (RFC 4648): whole quanta, then at most one padded one.
BASE64_BODY = "([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
#: Exactly the texts ``decode_base64_image`` reads, as a JSON Schema ``pattern`` (ECMA-262 and Python
#: regexes agree on it): standard padded base64, optionally as a data URL, ASCII whitespace around.
BASE64_IMAGE_PATTERN = f"^[{BASE64_SPACE}]*({DATA_URL_PREFIX})?{BASE64_BODY}[{BASE64_SPACE}]*$"
_DATA_URL = re.compile(DATA_URL_PREFIX)
# With a length that is a multiple of 4, this is the pattern's payload, checked in one C pass.
_BASE64_CHARS = re.compile("[A-Za-z0-9+/]*={0,2}")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


def decode_image(data: bytes, max_pixels: int, min_side: int = 16) -> np.ndarray:
    """Decode image file bytes into RGB or RGBA pixels, refusing unsafe or broken input.

    Args:
        data: the encoded file (PNG, JPEG, WebP, GIF, BMP, TIFF).
        max_pixels: largest width * height accepted; checked from the header before decoding.
        min_side: smallest width or height accepted (default 16).

    Returns:
        uint8 array (H, W, 3) RGB, or (H, W, 4) RGBA when the file carries alpha or a transparent
        colour. Palette, grey, 16-bit and CMYK images are converted; EXIF orientation is applied.

    Raises:
        InputError: ``field="image"`` with status 415 (not an image), 413 (too many pixels) or
            422 (truncated, corrupt, too small, unsupported pixel mode).
        RuntimeError: if ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was switched on in this process,
            which would make truncated files decode silently.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; refusing to decode (truncated images would pass)"
        )
    if not data:
        raise InputError("image", "expected image file bytes, got 0 bytes", status=415)
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open_header(data, limit)
        _check_header_size(image, limit, min_side)
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb_or_rgba(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise InputError("image", f"decompression bomb refused: {error}", status=413) from error
        except _DECODE_ERRORS as error:
            raise InputError(
                "image", f"expected a complete {image.format} file, got truncated or corrupt data ({error})"
            ) from error


def _open_header(data: bytes, limit: int) -> Image.Image:
    """Parse only the header (``Image.open`` is lazy); frame 0 is selected."""
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(
            "image", f"expected at most {limit} pixels, got a decompression bomb ({error})", status=413
        ) from error
    except UnidentifiedImageError as error:
        raise InputError(
            "image",
            f"expected a {'/'.join(ALLOWED_FORMATS)} file, got {len(data)} bytes no decoder recognises "
            f"(starting {data[:8]!r})",
            status=415,
        ) from error
    except _DECODE_ERRORS as error:
        raise InputError("image", f"expected a valid image header, got a corrupt one ({error})") from error


def _check_header_size(image: Image.Image, limit: int, min_side: int) -> None:
    """Refuse pixel bombs and tiny images from the declared size, before any pixel is decoded."""
    width, height = image.size
    if width * height > limit:
        raise InputError(
            "image", f"expected at most {limit} pixels, got {width}x{height} = {width * height}", status=413
        )
    if min(width, height) < min_side:
        raise InputError("image", f"expected width and height >= {min_side}, got {width}x{height}")
    if getattr(image, "is_animated", False):
        logger.info("multi-frame %s image; using its first frame", image.format)


def _to_rgb_or_rgba(image: Image.Image) -> np.ndarray:
    """Convert any supported pixel mode to a uint8 (H, W, 3|4) array."""
    if image.mode in SIXTEEN_BIT_GREY_MODES:
        # PIL's own conversion clips 16-bit values at 255 instead of rescaling them.
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise InputError("image", "expected an 8- or 16-bit image, got 32-bit floating-point pixels")
    has_alpha = image.mode in ALPHA_MODES or "transparency" in image.info
    target = "RGBA" if has_alpha else "RGB"
    converted = image if image.mode == target else image.convert(target)
    return np.array(converted, dtype=np.uint8)


def decode_base64_image(text: str, max_bytes: int, max_pixels: int, min_side: int = 16) -> np.ndarray:
    """Decode a base64 image (optionally a ``data:image/...;base64,`` URL) with size limits.

    The text must match ``BASE64_IMAGE_PATTERN``: standard base64 (RFC 4648 alphabet, padded),
    with only ASCII whitespace around it.

    Args:
        text: base64 text or data URL.
        max_bytes: largest decoded file size accepted, checked before decoding.
        max_pixels: passed to ``decode_image``.
        min_side: passed to ``decode_image``.

    Returns:
        uint8 (H, W, 3) RGB or (H, W, 4) RGBA, as ``decode_image``.

    Raises:
        InputError: ``field="image"``; 400 for text outside the pattern, 413 for payloads over
            ``max_bytes``, otherwise as ``decode_image``.
    """
    if not isinstance(text, str):
        raise InputError("image", f"expected base64 text, got {type(text).__name__}", status=400)
    # Refuse huge strings before any regex or copy touches them (4 chars per 3 bytes + URL prefix).
    if len(text) > 4 * (max_bytes // 3 + 1) + 256:
        raise InputError("image", _too_large(len(text) * 3 // 4, max_bytes), status=413)
    payload = base64_payload(text)
    decoded_size = len(payload) // 4 * 3 - payload[-2:].count("=")
    if decoded_size > max_bytes:
        raise InputError("image", _too_large(decoded_size, max_bytes), status=413)
    return decode_image(base64.b64decode(payload, validate=True), max_pixels=max_pixels, min_side=min_side)


def base64_payload(text: str) -> str:
    """The base64 payload of ``text``, which must match ``BASE64_IMAGE_PATTERN``.

    Checked without running that pattern over megabytes: a data URL prefix, then the base64
    alphabet with at most two ``=`` at the end, in a length that is a multiple of 4.

    Raises:
        InputError: ``field="image"``, 400, for any other text.
    """
    text = text.strip(BASE64_SPACE)
    prefix = _DATA_URL.match(text)
    if prefix is None and text.startswith("data:"):
        raise InputError("image", "expected a data URL of the form data:image/<type>;base64,<data>", status=400)
    payload = text[prefix.end():] if prefix else text
    if len(payload) % 4 or _BASE64_CHARS.fullmatch(payload) is None:
        raise InputError("image", "expected standard padded base64 (A-Z, a-z, 0-9, +, /, =), got other text", 400)
    return payload


def mib(size: int) -> str:
    """Bytes as MiB with one decimal, for messages people read."""
    return f"{size / 2**20:.1f} MiB"


def _too_large(size: int, limit: int) -> str:
    """The 413 message: sizes in MiB and the setting that sets the limit."""
    return f"is about {mib(size)} of image, over the upload limit of {mib(limit)} (service setting max_upload_bytes)"


def encode_png(image: np.ndarray) -> bytes:
    """Encode uint8 pixels as PNG bytes.

    Args:
        image: uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA.

    Returns:
        The PNG file.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"image: expected uint8 (H, W), (H, W, 3) or (H, W, 4), got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def has_transparency(image: np.ndarray) -> bool:
    """Whether an (H, W, 4) image has any pixel with alpha below 255 (TripoSR's test); RGB is never."""
    return image.ndim == 3 and image.shape[2] == 4 and bool(image[:, :, 3].min() < 255)


def alpha_bbox(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box of the pixels with alpha > 0.

    Args:
        alpha: (H, W) uint8.

    Returns:
        ``(top, bottom, left, right)`` with exclusive ``bottom``/``right``, or None if all zero.
    """
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_to_alpha(rgba: np.ndarray) -> np.ndarray:
    """Crop an (H, W, 4) image to the bounding box of its non-transparent pixels.

    Raises:
        InputError: ``field="image"`` if every pixel is fully transparent.
    """
    box = alpha_bbox(rgba[:, :, 3])
    if box is None:
        raise InputError("image", "expected a visible object, got a fully transparent image")
    top, bottom, left, right = box
    return rgba[top:bottom, left:right]


def pad_centered(rgba: np.ndarray, side: int) -> np.ndarray:
    """Pad an (H, W, 4) image with transparent pixels to (side, side, 4), content centred.

    Odd leftovers go to the bottom/right, as in TripoSR's reference.
    """
    height, width = rgba.shape[:2]
    if side < max(height, width):
        raise ValueError(f"side: expected >= {max(height, width)}, got {side}")
    top, left = (side - height) // 2, (side - width) // 2
    return np.pad(rgba, ((top, side - height - top), (left, side - width - left), (0, 0)))


def pad_to_square(rgba: np.ndarray) -> np.ndarray:
    """Pad an (H, W, 4) image to a centred (max(H, W), max(H, W), 4) square."""
    return pad_centered(rgba, max(rgba.shape[:2]))


def pad_to_ratio(square: np.ndarray, ratio: float) -> np.ndarray:
    """Pad a square (N, N, 4) image so its content spans ``ratio`` of the new side.

    Both sides get the same whole-pixel margin, ``round((N / ratio - N) / 2)``, so this step
    never shifts the object off centre (an odd total would move it half a pixel).

    Args:
        square: (N, N, 4) uint8.
        ratio: in (0, 1].
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio: expected in (0, 1], got {ratio}")
    side = square.shape[0]
    return pad_centered(square, side + 2 * round((side / ratio - side) / 2))


def composite_on_grey(rgba: np.ndarray, grey: float = GREY) -> np.ndarray:
    """Alpha-blend an (H, W, 4) uint8 image over a flat grey: ``rgb * a + grey * (1 - a)``.

    Returns:
        float32 (H, W, 3) on the [0, 1] scale.
    """
    pixels = rgba.astype(np.float32) / 255.0
    alpha = pixels[:, :, 3:4]
    return pixels[:, :, :3] * alpha + grey * (1.0 - alpha)


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize a float (N, N, C) [0, 1] image to uint8 (size, size, C).

    PIL's bilinear filter widens its support when shrinking, so downscaling is antialiased.
    Channels are resized in float so the result is quantised once.
    """
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(pixels[:, :, c], dtype=np.float32)).resize(
            (size, size), Image.Resampling.BILINEAR
        ))
        for c in range(pixels.shape[2])
    ]
    return np.rint(np.clip(np.stack(channels, axis=2), 0.0, 1.0) * 255.0).astype(np.uint8)


def centred_square(rgba: np.ndarray, foreground_ratio: float) -> np.ndarray:
    """Crop to the object, pad to a centred square and pad again so it spans ``foreground_ratio``."""
    return pad_to_ratio(pad_to_square(crop_to_alpha(rgba)), foreground_ratio)


def prepare_conditioning_image(rgba: np.ndarray, size: int, foreground_ratio: float, backdrop: float = GREY) -> np.ndarray:
    """The image-to-3D models' reference preprocessing of a cut-out object.

    Args:
        rgba: (H, W, 4) uint8 with the background transparent.
        size: output side in pixels.
        foreground_ratio: share of the side the object's longer extent spans.
        backdrop: grey level behind the object (TripoSR: 0.5; TRELLIS: 0.0, i.e. colour
            premultiplied by alpha).

    Returns:
        (size, size, 3) uint8 RGB, object centred on the backdrop.
    """
    return resize_square(composite_on_grey(centred_square(rgba, foreground_ratio), backdrop), size)


def prepare_cutout(rgba: np.ndarray, size: int, foreground_ratio: float) -> np.ndarray:
    """The cut-out as the model sees it, before the grey backdrop: (size, size, 4) uint8 RGBA.

    Same crop, centring and scale as ``prepare_conditioning_image``, so a viewer can show what
    TripoSR was given with the background still transparent.
    """
    return resize_square(centred_square(rgba, foreground_ratio).astype(np.float32) / 255.0, size)
