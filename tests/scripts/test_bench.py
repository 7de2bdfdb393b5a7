"""scripts/bench.py: its main() against a stub HTTP service (fast) and against the tiny graph (serve)."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from scripts import bench
from tests.conftest import ServedGraph, free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEADER = "| Prompt | Total | FLUX | BG | 3D | Remesh | Bake | Export | Size |"
STAGES = ("text_to_image", "background", "image_to_3d", "export", "total")
STUB_TIMING_MS = {"text_to_image": 40.0, "background": 5.0, "image_to_3d": 30.0, "export": 2.5, "total": 80.0}


class StubHandler(BaseHTTPRequestHandler):
    """Answers like gen3d: a file of 1000 + len(prompt) bytes with Server-Timing; prompt "broken" gets 503."""

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body["prompt"] == "broken":
            self.send_response(503)
            self.send_header("Retry-After", "2")
            payload = b'{"error": "busy", "field": null}'
        else:
            self.send_response(200)
            timing = ", ".join(f"{name};dur={ms}" for name, ms in STUB_TIMING_MS.items())
            self.send_header("Server-Timing", timing)
            payload = b"x" * (1000 + len(body["prompt"]))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_bench(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    code = bench.main([*args, "--out", str(tmp_path)])
    report = json.loads((tmp_path / "bench.json").read_text())
    markdown = (tmp_path / "bench.md").read_text()
    png = (tmp_path / "bench.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    return code, report, markdown


def test_summarise_matches_hand_computed_stats() -> None:
    stats = bench.summarise([4.0, 1.0, 3.0, 2.0])
    # p95 by linear interpolation: rank 0.95 * 3 = 2.85 between 3 and 4.
    assert stats == pytest.approx({"median": 2.5, "p95": 3.85, "mean": 2.5})
    assert bench.summarise([]) == {"median": None, "p95": None, "mean": None}


def test_load_prompts_cycles_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("a\n\n b \n")
    assert bench.load_prompts(path, 5) == ["a", "b", "a", "b", "a"]
    assert bench.load_prompts(None, 6)[-1] == bench.DEFAULT_PROMPTS[0]


def test_main_against_stub_counts_errors_and_reports_timings(tmp_path: Path, stub_url: str) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a blue cube\nbroken\n")
    out = tmp_path / "out"
    code, report, markdown = run_bench(
        out, "--url", stub_url, "--prompts", str(prompts), "-n", "4", "--concurrency", "2", "--sweep", "1,2,3"
    )
    assert code == 0
    assert set(report["runs"]) == {"sequential", "concurrent", "sweep-3"}
    assert len(report["requests"]) == 3 * 4
    for row in report["requests"]:
        if row["prompt"] == "broken":
            assert row["status"] == 503 and row["size_bytes"] == 0
        else:
            assert row["status"] == 200 and row["size_bytes"] == 1000 + len("a blue cube")
            assert row["stages"] == pytest.approx({k: ms / 1000 for k, ms in STUB_TIMING_MS.items()})
    for run in report["runs"].values():
        assert run["errors"] == 2 and run["assets_per_s"] > 0
        assert run["summary"]["median"]["image_to_3d"] == pytest.approx(0.030)
    assert [point["concurrency"] for point in report["sweep"]] == [1, 2, 3]
    assert report["overlap_gain"] > 0
    assert markdown.count(HEADER) == 2 and markdown.count("error 503") == 4
    assert all(f"| **{stat}** |" in markdown for stat in ("median", "p95", "mean"))


def test_unreachable_service_is_recorded_not_raised(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, report, markdown = run_bench(tmp_path, "--url", url, "-n", "2", "--warmup", "0", "--sweep", "1")
    assert code == 1
    assert [row["status"] for row in report["requests"]] == [0] * 4
    assert report["overlap_gain"] is None and "error no answer" in markdown


@pytest.mark.serve
def test_main_against_served_graph(tmp_path: Path, served: ServedGraph) -> None:
    code, report, markdown = run_bench(
        tmp_path, "--url", served.url, "-n", "3", "--concurrency", "2", "--sweep", "1,2", "--timeout", "120"
    )
    assert code == 0
    assert len(report["requests"]) == 2 * 3
    for row in report["requests"]:
        assert row["status"] == 200, row["error"]
        assert all(row["stages"][stage] > 0 for stage in STAGES), row["stages"]
        assert row["size_bytes"] > 0
    direct = httpx.post(f"{served.url}/generate", json={"prompt": bench.DEFAULT_PROMPTS[0], "seed": 0}, timeout=120)
    assert direct.status_code == 200
    sizes = [row["size_bytes"] for row in report["requests"] if row["prompt"] == bench.DEFAULT_PROMPTS[0]]
    assert all(0.5 < size / len(direct.content) < 2 for size in sizes)
    assert report["runs"]["sequential"]["assets_per_s"] > 0 and report["runs"]["concurrent"]["assets_per_s"] > 0
    assert markdown.count(HEADER) == 2 and "| **p95** |" in markdown


@pytest.mark.serve
def test_jobs_mode_times_jobs_to_done_with_their_stage_timings(tmp_path: Path, served: ServedGraph) -> None:
    code, report, _ = run_bench(
        tmp_path, "--url", served.url, "-n", "2", "--concurrency", "2", "--sweep", "1,2", "--warmup", "0",
        "--jobs", "--body", '{"texture": "vertex"}',
    )
    assert code == 0 and report["config"]["jobs"] and report["config"]["body"] == {"texture": "vertex"}
    for row in report["requests"]:
        assert row["status"] == 200, row["error"]
        assert set(row["stages"]) == {*STAGES, "total"} and row["size_bytes"] > 0
