"""The chunked-decimation benchmark's rows on a small blob (the script's logic, not its timings)."""

import pytest

from gen3d.mesh.clean import clean
from gen3d.mesh.planted import bumpy_blob
from scripts import bench_decimate_chunks


def test_rows_time_both_paths_and_count_edge_defects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_decimate_chunks, "TARGET", 2_000)
    mesh = clean(bumpy_blob(96))
    lines = bench_decimate_chunks.rows("blob", mesh, [2], repeats=1)
    assert [line.split(" | ")[2] for line in lines] == ["one pass", "chunked, 2 workers"]
    for line in lines:
        cells = [cell.strip() for cell in line.strip("| ").split("|")]
        assert cells[1] == f"{len(mesh.faces):,}" and cells[3].endswith(" s")
        assert float(cells[4].rstrip(" %")) < 0.5 and cells[5:] == ["0", "0"]
