"""Gaussian-splat PLY: the exact layout 404-GEN validators parse.

Header, byte for byte::

    ply
    format binary_little_endian 1.0
    element vertex N
    property float x            (one line per field in SPLAT_FIELDS order)
    ...
    end_header

No ``comment`` line (the SPZ compressor miners submit through rejects one before ``element
vertex``). The body is N records of 14 little-endian float32 (56 bytes): positions, SH degree-0
colour ``f_dc``, opacity logit, log scales, quaternion (w, x, y, z). Values are written as
stored in ``Gaussians``: the writer neither normalises quaternions nor re-centres.
"""

import re
from pathlib import Path

import numpy as np

from gen3d.results import Gaussians


class PlyError(ValueError):
    """A file that is not a splat PLY in the validators' layout, or gaussians that cannot be one."""

SPLAT_FIELDS: tuple[str, ...] = (
    "x", "y", "z",
    "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity",
    "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip

# PLY scalar type names (both spellings) -> numpy kinds; the byte order is added per file.
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">"}
_MAX_HEADER_BYTES = 64 * 1024


def splat_header(count: int) -> bytes:
    """The exact validator header for ``count`` gaussians, ending with ``end_header\\n``."""
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    lines += [f"property float {name}" for name in SPLAT_FIELDS]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def _checked_columns(g: Gaussians) -> list[np.ndarray]:
    """The 14 columns in field order as (N, k) float32, after checking shapes."""
    n = len(g)
    expected = {"means": 3, "f_dc": 3, "opacity": 1, "log_scales": 3, "rotations": 4}
    columns = []
    for name, width in expected.items():
        array = np.asarray(getattr(g, name))
        if array.reshape(n, -1).shape != (n, width) or array.shape[0] != n:
            raise PlyError(f"gaussians.{name}: expected shape ({n}, {width}), got {array.shape}")
        columns.append(array.reshape(n, width).astype(np.float32, copy=False))
    return columns


def write_splat_ply(g: Gaussians) -> bytes:
    """Serialise ``g`` to the validator PLY layout (header above, 56 bytes per gaussian).

    Args:
        g: gaussians in the file frame; arrays are cast to float32.

    Returns:
        The file bytes.
    """
    body = np.concatenate(_checked_columns(g), axis=1).astype("<f4", copy=False)
    return splat_header(len(g)) + np.ascontiguousarray(body).tobytes()


def _split_header(data: bytes) -> tuple[list[str], int]:
    """Header lines (without ``end_header``) and the byte offset where the body starts."""
    if not data.startswith(b"ply\n") and not data.startswith(b"ply\r\n"):
        raise PlyError(f"ply: expected a file starting with 'ply', got {data[:16]!r}")
    match = re.search(rb"end_header\r?\n", data[:_MAX_HEADER_BYTES])
    if match is None:
        raise PlyError(f"ply: no 'end_header' line within the first {_MAX_HEADER_BYTES} bytes")
    try:
        text = data[: match.start()].decode("ascii")
    except UnicodeDecodeError as err:
        raise PlyError(f"ply: header is not ASCII: {err}") from err
    return text.splitlines()[1:], match.end()


def _vertex_dtype(lines: list[str]) -> tuple[np.dtype, int]:
    """Structured dtype of the vertex element and its count, from header lines."""
    byte_order, count, fields, element = None, None, [], None
    for line in lines:
        words = line.split()
        if not words or words[0] in {"comment", "obj_info"}:
            continue
        if words[0] == "format":
            if len(words) != 3 or words[1] not in _FORMATS:
                raise PlyError(f"ply: expected a binary format line, got {line!r}")
            byte_order = _FORMATS[words[1]]
        elif words[0] == "element":
            element = words[1] if len(words) == 3 else None
            if element == "vertex":
                count = int(words[2]) if words[2].isdigit() else None
            elif element is None or words[2] != "0":
                raise PlyError(f"ply: expected only a 'vertex' element, got {line!r}")
        elif words[0] == "property" and element == "vertex":
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise PlyError(f"ply: expected a scalar vertex property, got {line!r}")
            fields.append((words[2], _PLY_TYPES[words[1]]))
        elif words[0] != "property":
            raise PlyError(f"ply: unexpected header line {line!r}")
    if byte_order is None or count is None:
        raise PlyError("ply: header lacks a binary 'format' line before 'element vertex <count>'")
    names = [name for name, _ in fields]
    if len(set(names)) != len(names):
        raise PlyError(f"ply: duplicate vertex property names in {names}")
    return np.dtype([(name, byte_order + kind) for name, kind in fields]), count


def read_splat_ply(data: bytes | str | Path) -> Gaussians:
    """Parse a splat PLY (bytes or a path) into ``Gaussians`` without altering any value.

    Extra scalar vertex properties (``nx ny nz``, ``f_rest_*``, ...) and comment lines are
    tolerated and ignored; big-endian files are accepted.

    Raises:
        PlyError: for a malformed header, a missing splat field, or a body
            shorter than the header promises.
    """
    raw = data if isinstance(data, bytes) else Path(data).read_bytes()
    lines, start = _split_header(raw)
    dtype, count = _vertex_dtype(lines)
    missing = [name for name in SPLAT_FIELDS if name not in (dtype.names or ())]
    if missing:
        raise PlyError(f"ply: missing vertex properties {missing}; expected all of {list(SPLAT_FIELDS)}")
    needed = count * dtype.itemsize
    if len(raw) - start < needed:
        raise PlyError(f"ply: body has {len(raw) - start} bytes, header promises {needed} ({count} vertices)")
    records = np.frombuffer(raw, dtype=dtype, count=count, offset=start)

    def stack(*names: str) -> np.ndarray:
        return np.stack([records[name].astype(np.float32) for name in names], axis=1)

    return Gaussians(
        means=stack("x", "y", "z"),
        f_dc=stack("f_dc_0", "f_dc_1", "f_dc_2"),
        opacity=records["opacity"].astype(np.float32),
        log_scales=stack("scale_0", "scale_1", "scale_2"),
        rotations=stack("rot_0", "rot_1", "rot_2", "rot_3"),
    )
