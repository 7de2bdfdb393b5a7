"""Splat PLY writer/reader: exact header, field order, round trips, clear errors."""

from pathlib import Path

import numpy as np
import pytest

from gen3d.results import Gaussians
from gen3d.splat.ply import SPLAT_FIELDS, PlyError, read_splat_ply, write_splat_ply

HAMBURGER = Path(__file__).resolve().parent.parent / "fixtures" / "hamburger.ply"


def random_gaussians(n: int, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    return Gaussians(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        f_dc=rng.normal(size=(n, 3)).astype(np.float32),
        opacity=rng.normal(size=n).astype(np.float32),
        log_scales=rng.normal(size=(n, 3)).astype(np.float32),
        rotations=rng.normal(size=(n, 4)).astype(np.float32),
    )


def test_header_is_exact_and_body_is_14_floats_in_spec_order() -> None:
    g = random_gaussians(5)
    data = write_splat_ply(g)
    header, body = data.split(b"end_header\n", 1)
    expected = ["ply", "format binary_little_endian 1.0", "element vertex 5"]
    expected += [f"property float {name}" for name in SPLAT_FIELDS]
    assert header.decode("ascii").split("\n")[:-1] == expected
    assert b"comment" not in header
    assert len(body) == 5 * 56
    record = np.frombuffer(body, dtype="<f4").reshape(5, 14)[3]
    np.testing.assert_array_equal(record[:3], g.means[3])
    np.testing.assert_array_equal(record[3:6], g.f_dc[3])
    assert record[6] == g.opacity[3]
    np.testing.assert_array_equal(record[7:10], g.log_scales[3])
    np.testing.assert_array_equal(record[10:], g.rotations[3])


def test_round_trip_keeps_every_value() -> None:
    g = random_gaussians(100, seed=3)
    back = read_splat_ply(write_splat_ply(g))
    for name in ("means", "f_dc", "opacity", "log_scales", "rotations"):
        np.testing.assert_array_equal(getattr(back, name), getattr(g, name))


def test_hamburger_round_trips_bit_for_bit(tmp_path: Path) -> None:
    raw = HAMBURGER.read_bytes()
    g = read_splat_ply(HAMBURGER)
    assert len(g) == 52709
    assert write_splat_ply(g) == raw


def test_reader_tolerates_extra_properties_comments_and_big_endian() -> None:
    g = random_gaussians(4, seed=1)
    names = ["x", "y", "z", "nx", "ny", "nz", *SPLAT_FIELDS[3:], "f_rest_0"]
    columns = [g.means, np.zeros((4, 3)), g.f_dc, g.opacity[:, None], g.log_scales, g.rotations, np.ones((4, 1))]
    body = np.concatenate(columns, axis=1).astype(">f4").tobytes()
    header = "ply\nformat binary_big_endian 1.0\ncomment made elsewhere\nelement vertex 4\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    back = read_splat_ply(header.encode() + body)
    np.testing.assert_array_equal(back.means, g.means)
    np.testing.assert_array_equal(back.rotations, g.rotations)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"not a ply", "starting with 'ply'"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n", "binary format"),
        (write_splat_ply(random_gaussians(3)).replace(b"property float rot_3\n", b""), "rot_3"),
        (write_splat_ply(random_gaussians(3))[:-8], "header promises"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n", "end_header"),
    ],
)
def test_malformed_files_raise_input_error(data: bytes, fragment: str) -> None:
    with pytest.raises(PlyError, match=fragment):
        read_splat_ply(data)


def test_writer_rejects_mismatched_shapes() -> None:
    g = random_gaussians(4)
    bad = Gaussians(g.means, g.f_dc, g.opacity, g.log_scales, g.rotations[:, :3])
    with pytest.raises(PlyError, match="rotations"):
        write_splat_ply(bad)
