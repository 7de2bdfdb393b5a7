"""scripts.background_data: the npm package's chunks are checked before a model is written."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from scripts.background_data import NpmUnavailable, npm_pack, reassemble


def package(path: Path, chunks: list[bytes], listed: list[bytes] | None = None) -> Path:
    """A tarball laid out like the npm package: ``chunks`` stored, ``listed`` in resources.json."""
    listed = chunks if listed is None else listed
    entries, offset = [], 0
    for data in listed:
        entries.append({"hash": hashlib.sha256(data).hexdigest(), "offsets": [offset, offset + len(data)]})
        offset += len(data)
    resources = {"/models/medium": {"chunks": entries, "size": offset}}
    members = {"package/dist/resources.json": json.dumps(resources).encode()}
    for entry, data in zip(entries, chunks):
        members[f"package/dist/{entry['hash']}"] = data
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_chunks_are_concatenated_in_order(tmp_path: Path) -> None:
    tarball = package(tmp_path / "p.tgz", [b"first-", b"second-", b"third"])
    out = reassemble(tarball, "/models/medium", tmp_path / "model.onnx")
    assert out.read_bytes() == b"first-second-third"


def test_a_chunk_that_does_not_match_its_hash_writes_nothing(tmp_path: Path) -> None:
    tarball = package(tmp_path / "p.tgz", [b"first-", b"tampered"], listed=[b"first-", b"second"])
    with pytest.raises(ValueError, match="does not match"):
        reassemble(tarball, "/models/medium", tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == [tmp_path / "p.tgz"]


def test_missing_npm_is_reported_as_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NpmUnavailable, match="npm is not installed"):
        npm_pack("@imgly/background-removal-data@1.4.5", tmp_path / "cache")
