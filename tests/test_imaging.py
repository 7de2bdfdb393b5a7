"""Tests for gen3d.imaging: safe decoding and TripoSR preprocessing maths (synthetic images)."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from gen3d.errors import InputError
from gen3d.imaging import (
    composite_on_grey,
    crop_to_alpha,
    decode_base64_image,
    decode_image,
    encode_png,
    has_transparency,
    pad_to_ratio,
    pad_to_square,
    prepare_conditioning_image,
    resize_square,
)

MAX_PIXELS = 4096 * 4096
GREY_U8 = round(0.5 * 255)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def handmade_png(width: int, height: int, bit_depth: int = 8, colour_type: int = 2, raw: bytes = b"\0" * 16) -> bytes:
    """A PNG written byte by byte: IHDR with the given size, one IDAT of ``raw`` scanlines, IEND."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_png_roundtrip_rgb_and_rgba(rgb: np.ndarray) -> None:
    assert np.array_equal(decode_image(encode_png(rgb), MAX_PIXELS), rgb)
    rgba = np.dstack([rgb, np.arange(48 * 64, dtype=np.uint32).reshape(48, 64).astype(np.uint8)])
    decoded = decode_image(encode_png(rgba), MAX_PIXELS)
    assert decoded.shape == (48, 64, 4)
    assert np.array_equal(decoded, rgba)


@pytest.mark.parametrize("data", [b"", b"definitely not an image " * 8, b"%!PS-Adobe-3.0 EPSF-3.0\n"])
def test_non_image_bytes_are_unsupported_media(data: bytes) -> None:
    with pytest.raises(InputError) as info:
        decode_image(data, MAX_PIXELS)
    assert info.value.field == "image"
    assert info.value.status == 415


def test_truncated_png_is_refused(rgb: np.ndarray) -> None:
    data = encode_png(rgb)
    with pytest.raises(InputError, match="truncated or corrupt") as info:
        decode_image(data[: len(data) // 2], MAX_PIXELS)
    assert info.value.status == 422


def test_truncated_jpeg_is_refused(rgb: np.ndarray) -> None:
    data = save(Image.fromarray(rgb), "JPEG")
    assert decode_image(data, MAX_PIXELS).shape == (48, 64, 3)
    with pytest.raises(InputError, match="truncated or corrupt"):
        decode_image(data[: len(data) - 40], MAX_PIXELS)


def test_truncation_guard_cannot_be_switched_off(rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(encode_png(rgb), MAX_PIXELS)


def test_pixel_bomb_refused_from_header_before_decoding() -> None:
    # The IDAT holds 16 bytes for 25 M pixels: decoding would fail as corrupt, so a 413
    # proves the refusal came from the header.
    bomb = handmade_png(5000, 5000)
    assert len(bomb) < 100
    with pytest.raises(InputError, match="5000x5000") as info:
        decode_image(bomb, max_pixels=1_000_000)
    assert info.value.status == 413


def test_pil_decompression_bomb_is_refused_too() -> None:
    with pytest.raises(InputError) as info:
        decode_image(handmade_png(100_000, 100_000), max_pixels=10**12)
    assert info.value.status == 413


def test_pixel_limit_is_inclusive(rgb: np.ndarray) -> None:
    assert decode_image(encode_png(rgb), max_pixels=48 * 64).shape == (48, 64, 3)
    with pytest.raises(InputError):
        decode_image(encode_png(rgb), max_pixels=48 * 64 - 1)


@pytest.mark.parametrize("shape", [(1, 1, 3), (15, 200, 3), (200, 15, 4)])
def test_too_small_images_are_refused(shape: tuple[int, int, int]) -> None:
    with pytest.raises(InputError, match=">= 16") as info:
        decode_image(encode_png(np.zeros(shape, np.uint8)), MAX_PIXELS)
    assert info.value.status == 422


def test_palette_without_and_with_transparency() -> None:
    indices = np.tile(np.arange(4, dtype=np.uint8), (16, 4))
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    decoded = decode_image(save(image, "PNG"), MAX_PIXELS)
    assert decoded.shape == (16, 16, 3)
    assert decoded[0, :4].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]]

    decoded = decode_image(save(image, "PNG", transparency=1), MAX_PIXELS)
    assert decoded.shape == (16, 16, 4)
    assert decoded[0, :4, 3].tolist() == [255, 0, 255, 255]
    assert has_transparency(decoded)


def test_grey_and_grey_alpha() -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    decoded = decode_image(save(Image.fromarray(grey), "PNG"), MAX_PIXELS)
    assert decoded.shape == (16, 16, 3)
    assert all(np.array_equal(decoded[:, :, c], grey) for c in range(3))

    grey_alpha = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(255 - grey)])
    decoded = decode_image(save(grey_alpha, "PNG"), MAX_PIXELS)
    assert decoded.shape == (16, 16, 4)
    assert np.array_equal(decoded[:, :, 3], 255 - grey)


def test_sixteen_bit_grey_is_rescaled_not_clipped() -> None:
    wide = np.tile(np.array([0, 257, 32896, 65535], np.uint16), (16, 4))
    decoded = decode_image(save(Image.fromarray(wide), "PNG"), MAX_PIXELS)
    assert decoded.dtype == np.uint8
    assert decoded[0, :4, 0].tolist() == [0, 1, 128, 255]


def test_sixteen_bit_rgb_png() -> None:
    samples = np.random.default_rng(1).integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)
    decoded = decode_image(handmade_png(16, 16, bit_depth=16, colour_type=2, raw=rows), MAX_PIXELS)
    assert decoded.shape == (16, 16, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - np.rint(samples / 257)).max() <= 1


def test_cmyk_jpeg_becomes_rgb(rgb: np.ndarray) -> None:
    decoded = decode_image(save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), MAX_PIXELS)
    assert decoded.shape == (48, 64, 3)
    assert np.abs(decoded.astype(int) - rgb).mean() < 20


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displaying needs a 90° clockwise turn
    decoded = decode_image(save(Image.fromarray(pixels), "PNG", exif=exif), MAX_PIXELS)
    assert decoded.shape == (40, 20, 3)
    assert decoded[5, 10].tolist() == [255, 0, 0]
    assert decoded[35, 10].tolist() == [0, 0, 255]


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    decoded = decode_image(data, MAX_PIXELS)
    assert decoded[16, 16].tolist() == [255, 0, 0]


def test_base64_plain_and_data_url(rgb: np.ndarray) -> None:
    text = base64.b64encode(encode_png(rgb)).decode()
    assert np.array_equal(decode_base64_image(text, 10**6, MAX_PIXELS), rgb)
    assert np.array_equal(decode_base64_image(f" data:image/png;base64,{text}\n", 10**6, MAX_PIXELS), rgb)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("not base64!", 400),
        ("iVBORw0KGgo", 400),  # missing padding
        ("iVBO\nRw0KGgo=", 400),  # embedded newline
        ("data:image/png,iVBORw0KGgo=", 400),  # data URL without ;base64
        ("data:text/plain;base64,aGVsbG8=", 400),  # only data:image/... URLs match the pattern
        (base64.b64encode(b"hello world, not an image").decode(), 415),
    ],
)
def test_bad_base64_is_refused(text: str, status: int) -> None:
    with pytest.raises(InputError) as info:
        decode_base64_image(text, 10**6, MAX_PIXELS)
    assert info.value.field == "image"
    assert info.value.status == status


def test_oversize_base64_is_413(rgb: np.ndarray) -> None:
    data = encode_png(rgb)
    text = base64.b64encode(data).decode()
    assert decode_base64_image(text, len(data), MAX_PIXELS).shape == rgb.shape
    with pytest.raises(InputError) as info:
        decode_base64_image(text, len(data) - 1, MAX_PIXELS)
    assert info.value.status == 413
    with pytest.raises(InputError) as info:
        decode_base64_image("A" * 10_000_000, 1000, MAX_PIXELS)
    assert info.value.status == 413


def test_has_transparency() -> None:
    opaque = np.full((4, 4, 4), 255, np.uint8)
    assert not has_transparency(opaque)
    assert not has_transparency(opaque[:, :, :3])
    opaque[1, 2, 3] = 254
    assert has_transparency(opaque)


def rectangle_rgba(height: int, width: int, box: tuple[int, int, int, int], colour=(200, 40, 10)) -> np.ndarray:
    top, bottom, left, right = box
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[top:bottom, left:right] = (*colour, 255)
    return rgba


def test_crop_and_square_padding_centre_the_object() -> None:
    rgba = rectangle_rgba(200, 300, (20, 50, 210, 271))
    cropped = crop_to_alpha(rgba)
    assert cropped.shape == (30, 61, 4) and (cropped[:, :, 3] == 255).all()
    square = pad_to_square(cropped)
    assert square.shape == (61, 61, 4)
    rows = np.flatnonzero(square[:, :, 3].any(axis=1))
    assert (rows[0], rows[-1]) == (15, 44)  # 31 spare rows: 15 above, 16 below


def test_pad_to_ratio_sets_the_object_share() -> None:
    square = np.full((100, 100, 4), 255, np.uint8)
    padded = pad_to_ratio(square, 0.85)
    assert padded.shape == (118, 118, 4)
    assert (padded[:, :, 3] == 255).sum() == 100 * 100
    assert padded[8, 8, 3] == 0 and padded[9, 9, 3] == 255  # 9-pixel margin on both sides
    assert padded[108, 108, 3] == 255 and padded[109, 109, 3] == 0
    assert pad_to_ratio(square, 1.0).shape == (100, 100, 4)
    assert pad_to_ratio(np.full((120, 120, 4), 255, np.uint8), 0.85).shape == (142, 142, 4)  # 141.2 -> even margin


def test_fully_transparent_crop_is_an_input_error() -> None:
    with pytest.raises(InputError, match="fully transparent"):
        crop_to_alpha(np.zeros((8, 8, 4), np.uint8))


def test_composite_is_alpha_blend_on_exact_grey() -> None:
    rgba = np.array([[[200, 40, 10, 0], [200, 40, 10, 255], [200, 40, 10, 51]]], np.uint8)
    out = composite_on_grey(rgba)
    assert out.dtype == np.float32
    assert np.array_equal(out[0, 0], np.full(3, 0.5, np.float32))
    np.testing.assert_allclose(out[0, 1], np.array([200, 40, 10]) / 255, rtol=1e-6)
    np.testing.assert_allclose(out[0, 2], np.array([200, 40, 10]) / 255 * 0.2 + 0.5 * 0.8, rtol=1e-6)


def test_resize_is_antialiased() -> None:
    stripes = np.zeros((1536, 1536, 3), np.float32)
    stripes[:, ::3] = 1.0  # one bright column in three: aliasing would keep hard stripes
    out = resize_square(stripes, 512)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    interior = out[2:-2, 2:-2]  # the outermost pixels see the stripe pattern's phase at the edge
    assert np.abs(interior.astype(int) - 85).max() <= 12


def test_prepared_rectangle_is_centred_spans_ratio_on_grey() -> None:
    # A 480x240 rectangle off-centre in a 600x800 canvas: after preprocessing its long side spans
    # 85 % of 512 (to within the whole-pixel margin, ~1/565 of the side) and it sits in the middle.
    rgba = rectangle_rgba(600, 800, (30, 270, 300, 780))
    out = prepare_conditioning_image(rgba, size=512, foreground_ratio=0.85)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    inside = out[:, :, 0] > (200 + GREY_U8) / 2  # half-coverage edge of the red channel
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    width, height = cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
    assert abs(width - 0.85 * 512) <= 2
    assert abs(height - 0.85 * 512 / 2) <= 2
    assert abs((cols[0] + cols[-1]) / 2 - 255.5) <= 1.5
    assert abs((rows[0] + rows[-1]) / 2 - 255.5) <= 1.5
    assert out[rows[0] + 20, cols[0] + 20].tolist() == [200, 40, 10]
    grey_band = np.concatenate([out[: rows[0] - 2].reshape(-1, 3), out[rows[-1] + 3 :].reshape(-1, 3)])
    assert (grey_band == GREY_U8).all()
