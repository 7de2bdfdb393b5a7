"""scripts/card_limit.py (the GPU protocol of issue 21): steps within the budget, graph configs,
the summary's tables, and a dry run of part 1 on the tiny CPU graph."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scripts import card_limit, served_graph
from scripts.card_limit_report import write_summary

ROOT = Path(__file__).resolve().parents[2]


def context(tmp_path: Path, budget_s: float, dry_run: bool = False) -> card_limit.Context:
    return card_limit.Context(out=tmp_path, deadline=time.monotonic() + budget_s, dry_run=dry_run,
                              base_config=ROOT / "configs" / "serve_random.yaml", port=8093, sizes=card_limit.Sizes())  # fmt: skip


def test_steps_run_in_order_within_the_budget_and_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = []

    def step(key: str, needs_s: float, fails: bool = False, **flags) -> card_limit.Step:
        def run(ctx):
            ran.append(key)
            if fails:
                raise RuntimeError("boom")
            return {"value": key}

        return card_limit.Step(key, needs_s, run, **flags)

    steps = {
        "1": [step("env", 1, repeat=True), step("a", 1), step("b", 1, fails=True), step("too-long", 10_000), step("gpu", 1, gpu_only=True)],
        "2": [step("env", 1, repeat=True), step("a", 1), step("too-long", 1)],
    }
    monkeypatch.setattr(card_limit, "part_steps", lambda part: steps[part])
    ctx = context(tmp_path, 100, dry_run=True)
    card_limit.run_part(ctx, "1")
    done = ctx.results["steps"]
    assert ran == ["env", "a", "b"]
    assert done["a"]["status"] == "done" and done["a"]["result"] == {"value": "a"}
    assert done["b"]["status"] == "failed" and "boom" in done["b"]["reason"]
    assert done["too-long"]["status"] == "skipped" and "needs 10000 s" in done["too-long"]["reason"]
    assert done["gpu"]["reason"] == "GPU only (dry run)"
    card_limit.run_part(ctx, "2")  # "a" is not run again; a skipped step gets its chance; env repeats per part
    assert ran == ["env", "a", "b", "env", "too-long"] and set(done) >= {"env@1", "env@2"}
    assert (tmp_path / "results.json").is_file() and (tmp_path / "summary.md").is_file()


def test_graph_configs_carry_the_plan(tmp_path: Path) -> None:
    plan = served_graph.GraphPlan(
        "x", ROOT / "configs" / "serve_random.yaml", 9001, mps="on", text_to_image={"max_batch_size": 2},
        deployment_env={"BackgroundDeployment": {"CUDA_MPS_CLIENT_PRIORITY": "1"}},
    )
    config = served_graph.plan_config(plan)
    app = config["applications"][0]
    deployments = {d["name"]: d for d in app["deployments"]}
    assert config["http_options"]["port"] == 9001 and app["args"]["mps"] == "on"
    assert app["args"]["overrides"]["text_to_image"] == {"max_batch_size": 2}
    assert deployments["BackgroundDeployment"]["ray_actor_options"]["runtime_env"]["env_vars"] == {"CUDA_MPS_CLIENT_PRIORITY": "1"}
    flux_env = deployments["TextToImageDeployment"]["ray_actor_options"]["runtime_env"]["env_vars"]
    assert flux_env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}  # the base config's, kept
    assert served_graph.gpu_replicas(config) == 3
    assert served_graph.gpu_replicas(yaml.safe_load((ROOT / "configs" / "serve_gpus_1.yaml").read_text())) == 4


def test_summary_renders_sweeps_ratios_timelines_and_the_fault(tmp_path: Path) -> None:
    def sweep(rate8: float) -> dict:
        return {"assets_per_s": {"1": 2.5, "8": rate8, "16": rate8}, "errors": {"sequential": 0}, "p50_sequential_s": 0.36,
                "p50_concurrent_s": 1.6, "p99_concurrent_s": 2.0, "stages_sequential": {}, "stages_concurrent": {"text_to_image": 0.2}}  # fmt: skip

    fault = {"injector_exit": 0, "injector_output": "fault raised: illegal address", "statuses_before": {"200": 9},
             "statuses_until_recovery": {"502": 8}, "recovered_after_s": 41.5, "waited_s": 150, "wedged_lines": 3}  # fmt: skip
    results = {
        "max_batch_size": 4,
        "steps": {
            "mps-off": {"part": "1", "status": "done", "seconds": 200, "result": {"sweep": sweep(4.5), "text_to_image": {"max_batch_size": 1}, "mps": {"up": False}}},
            "mps-only": {"part": "2", "status": "done", "seconds": 300, "result": {"sweep": sweep(5.0), "text_to_image": {"max_batch_size": 1}, "mps": {"up": True, "clients": 3}}},
            "mps-batch": {"part": "2", "status": "done", "seconds": 300, "result": {"sweep": sweep(6.3), "text_to_image": {"max_batch_size": 4}, "mps": {"up": True, "clients": 3}, "fault": fault}},
        },
    }  # fmt: skip
    results["steps"]["mps-off"]["result"]["timeline"] = {"markdown": "| span | assets |\n|---|---|\n| 8.00 s | 32 |"}
    write_summary(results, tmp_path / "summary.md")
    text = (tmp_path / "summary.md").read_text()
    assert "| MPS on, no batching | 1 | 3 |" in text and "2.50 / 5.00 / 5.00" in text
    assert "MPS on, no batching over MPS off, no batching (before): 1.11× at 8 clients" in text
    assert "MPS on, FLUX batching over MPS off, no batching (before): 1.40× at 8 clients" in text
    assert "| 8.00 s | 32 |" in text and "Answered again after 41.5 s" in text and "{'502': 8}" in text


@pytest.mark.serve
def test_dry_run_of_part_one_on_the_tiny_graph(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "scripts.card_limit", str(tmp_path), "--dry-run", "--part", "1", "--budget-s", "420"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = json.loads((tmp_path / "results.json").read_text())["steps"]
    assert [steps[k]["status"] for k in ("environment@1", "precompile@1", "mps-off")] == ["done"] * 3, steps
    graph = steps["mps-off"]["result"]
    assert graph["sweep"]["errors"] == {"sequential": 0, "concurrent": 0} and graph["sweep"]["assets_per_s"]["1"] > 0
    assert graph["mps"] == {"up": False} and "no replica traces" in graph["timeline"]["error"]  # CPU stages record no GPU trace
    assert graph["stop"] == "stopped" and steps["flux_check"]["status"] == "skipped"
    assert "| MPS off, no batching (before) | 1 | off |" in (tmp_path / "summary.md").read_text()
