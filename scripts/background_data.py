"""Data for background-stage tests and measurements: real IS-Net weights and cut-out scenes.

Weights come from the npm package @imgly/background-removal-data.

The package (AGPL-3.0) ships IS-Net (the model is MIT per the package's ThirdPartyLicenses.json)
as an fp16 ONNX graph cut into 4 MiB chunks named by their sha256 and listed, with their byte
offsets, in ``dist/resources.json``. This module packs the package with npm into a cache outside
the repository, checks every chunk's hash and offsets, and writes the reassembled model there.
Use it for tests and measurements only: never commit, ship or serve the package or the model.

Scenes: the RGBA fixtures with true alpha (tests/fixtures, MIT) composited over backdrops, so a
predicted mask can be scored against the fixture's own alpha.

Usage (writes ``OUT_DIR/isnet-general-use.onnx``, e.g. into an ignored folder to carry to a GPU box):
    python -m scripts.background_data OUT_DIR
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gen3d.imaging import decode_image

PACKAGE = "@imgly/background-removal-data@1.4.5"
#: IS-Net at full precision of the package ("small" is a quantised variant).
RESOURCE = "/models/medium"
MODEL_NAME = "isnet-imgly-1.4.5-medium.onnx"
#: npm retries for minutes by default; an unreachable registry should fail fast.
NPM_TIMEOUT_S = 300
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
#: RGBA fixtures (256x256) whose alpha is the object's true silhouette.
CUTOUTS = ("chair.png", "flamingo.png", "ghost_rgba.png", "horse.png", "robot.png")


class NpmUnavailable(RuntimeError):
    """npm is missing or could not fetch the package (no registry access)."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gen3d`` (default ``~/.cache/gen3d``): outside any repository."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gen3d"


def npm_pack(package: str, destination: Path) -> Path:
    """Download ``package``'s tarball into ``destination`` with ``npm pack``.

    Raises:
        NpmUnavailable: npm is not installed, or it failed (say, no registry).
    """
    npm = shutil.which("npm")
    if npm is None:
        raise NpmUnavailable("npm is not installed")
    destination.mkdir(parents=True, exist_ok=True)
    command = [npm, "pack", package, "--json", "--pack-destination", str(destination),
               "--fetch-retries=1", "--fetch-timeout=60000"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        raise NpmUnavailable(f"npm pack {package} timed out after {NPM_TIMEOUT_S} s") from error
    if done.returncode != 0:
        raise NpmUnavailable(f"npm pack {package} failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return destination / json.loads(done.stdout)[0]["filename"]


def reassemble(tarball: Path, resource: str, out: Path) -> Path:
    """Concatenate ``resource``'s chunks from the package tarball into ``out``, verifying each.

    Raises:
        ValueError: a chunk whose sha256 or offsets disagree with ``resources.json``, or a total
            size that differs from the listed one.
    """
    with tarfile.open(tarball) as archive:
        listing = json.load(archive.extractfile("package/dist/resources.json"))[resource]
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in listing["chunks"]:
                    data = archive.extractfile(f"package/dist/{chunk['hash']}").read()
                    start, end = chunk["offsets"]
                    if hashlib.sha256(data).hexdigest() != chunk["hash"] or handle.tell() != start or len(data) != end - start:
                        raise ValueError(f"{tarball.name}: chunk {chunk['hash']} of {resource} does not match resources.json")
                    handle.write(data)
                if handle.tell() != listing["size"]:
                    raise ValueError(f"{tarball.name}: {resource} is {handle.tell()} bytes, resources.json says {listing['size']}")
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return out


def fetch_isnet(cache: Path | None = None) -> Path:
    """The reassembled IS-Net ONNX in the cache, packing and reassembling it on first use.

    The file is only renamed into place once every chunk checked out, so an existing file is
    complete. The 136 MB tarball is deleted afterwards.

    Raises:
        NpmUnavailable: npm or the registry is unavailable.
    """
    cache = cache or cache_dir()
    model = cache / MODEL_NAME
    if model.is_file():
        return model
    with tempfile.TemporaryDirectory(dir=cache.parent if cache.parent.is_dir() else None) as scratch:
        tarball = npm_pack(PACKAGE, Path(scratch))
        return reassemble(tarball, RESOURCE, model)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def backdrops(height: int, width: int) -> dict[str, np.ndarray]:
    """(H, W, 3) float backdrops: a studio-like light-grey vertical gradient and plain white."""
    gradient = np.linspace(235.0, 175.0, height)[:, None, None]
    return {"studio": np.broadcast_to(gradient, (height, width, 3)), "white": np.full((height, width, 3), 255.0)}


def composite(rgba: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """Alpha-composite a uint8 (H, W, 4) image over a float (H, W, 3) backdrop -> uint8 RGB."""
    alpha = rgba[:, :, 3:].astype(np.float64) / 255
    return np.round(rgba[:, :, :3] * alpha + backdrop * (1 - alpha)).astype(np.uint8)


def cutout(name: str) -> np.ndarray:
    """A fixture as (H, W, 4) uint8 RGBA."""
    return decode_image((FIXTURES / name).read_bytes(), max_pixels=4096 * 4096)


def scenes(names: tuple[str, ...] = CUTOUTS) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(label, RGB composite, true mask as bool (H, W)) for every fixture over every backdrop."""
    for name in names:
        rgba = cutout(name)
        for backdrop_name, backdrop in backdrops(*rgba.shape[:2]).items():
            yield f"{name}/{backdrop_name}", composite(rgba, backdrop), rgba[:, :, 3] >= 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="folder to write isnet-general-use.onnx into")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    target = args.out_dir / "isnet-general-use.onnx"
    shutil.copyfile(fetch_isnet(), target)
    print(f"wrote {target} ({target.stat().st_size / 2**20:.1f} MiB) from {PACKAGE}; do not commit it")


if __name__ == "__main__":
    main()
