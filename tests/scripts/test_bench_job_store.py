"""scripts/bench_job_store.py: every write of a job is timed on each backend it is given."""

import json
from pathlib import Path

from scripts import bench_job_store


def test_every_write_of_a_job_is_measured_on_memory_and_sqlite(tmp_path: Path) -> None:
    assert bench_job_store.main(["-n", "3", "--folder", str(tmp_path / "jobs"), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench_job_store.json").read_text())
    operations = ["create", "running", *bench_job_store.FILES, "view"]
    assert report["n"] == 3 and list(report["median_ms"]) == ["memory", "sqlite"]
    assert all(list(medians) == operations for medians in report["median_ms"].values())
    assert (tmp_path / "jobs" / "jobs.sqlite3").is_file() and len(list((tmp_path / "jobs" / "files").iterdir())) == 3
