"""OUT/summary.md of the card-limit protocol (``scripts/card_limit.py``): every result so far, as tables.

Rendered after every step from OUT/results.json, so a part cut short still leaves its tables. The
timeline and FLUX-check tables are the ones their scripts wrote next to their results.
"""

from pathlib import Path
from typing import Any

#: The graphs of the protocol, in the order their rows appear, with what each one changes.
GRAPHS = {
    "mps-off": "MPS off, no batching (before)",
    "mps-only": "MPS on, no batching",
    "mps-batch": "MPS on, FLUX batching",
    "proxy-third": "proxy of the user's card: MPS, 33 % of the SMs per process, 24 GB caps",
    "priority": "MPS on, batching, FLUX above the other stages (client priority)",
}
STAGES = ("text_to_image", "background", "image_to_3d", "remesh", "bake", "export", "total")


def _s(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def steps_table(steps: dict[str, Any]) -> list[str]:
    lines = ["| step | part | status | seconds | note |", "|---|---:|---|---:|---|"]
    for key, step in steps.items():
        note = step.get("reason") or (step.get("result") or {}).get("error") or ""
        lines.append(f"| {key} | {step['part']} | {step['status']} | {_s(step.get('seconds'), 0)} | {str(note)[:160]} |")
    return lines


def graph_rows(steps: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The throughput table and the stage-median table, one row per graph that ran."""
    sweep_lines = [
        "| graph | FLUX batch | MPS clients | ready | p50 alone | assets/s 1 / 8 / 16 | p50 / p99 at 8 | peak MiB | errors |",
        "|---|---:|---:|---:|---:|---|---|---:|---|",
    ]
    stage_lines = ["| graph | " + " | ".join(STAGES) + " |", "|---|" + "---:|" * len(STAGES)]
    for name, label in GRAPHS.items():
        result = (steps.get(name) or {}).get("result")
        if not result or "sweep" not in result or "error" in result["sweep"]:
            continue
        sweep, mps = result["sweep"], result.get("mps") or {}
        rates = " / ".join(_s(sweep["assets_per_s"].get(c), 2) for c in ("1", "8", "16"))
        clients = mps.get("clients", "–") if mps.get("up") else "off"
        sweep_lines.append(
            f"| {label} | {result['text_to_image'].get('max_batch_size', 1)} | {clients} | {_s(result.get('ready_s'), 0)} s | "
            f"{_s(sweep['p50_sequential_s'])} s | {rates} | {_s(sweep['p50_concurrent_s'])} / {_s(sweep['p99_concurrent_s'])} s | "
            f"{result.get('peak_mib') or '–'} | {sum(sweep['errors'].values())} |"
        )
        medians = sweep["stages_concurrent"]
        stage_lines.append(f"| {label} | " + " | ".join(_s(medians.get(stage)) for stage in STAGES) + " |")
    return sweep_lines, stage_lines


def ratios(steps: dict[str, Any]) -> list[str]:
    """assets/s of each MPS graph over the MPS-off graph, per client count."""

    def rates(name: str) -> dict[str, float]:
        result = (steps.get(name) or {}).get("result") or {}
        return (result.get("sweep") or {}).get("assets_per_s") or {}

    before = rates("mps-off")
    lines = []
    for name in ("mps-only", "mps-batch"):
        after = rates(name)
        shared = [c for c in ("8", "16") if c in before and c in after and before[c]]
        if shared:
            parts = ", ".join(f"{after[c] / before[c]:.2f}× at {c} clients" for c in shared)
            lines.append(f"- {GRAPHS[name]} over {GRAPHS['mps-off']}: {parts}")
    return lines


def fault_lines(steps: dict[str, Any]) -> list[str]:
    fault = ((steps.get("mps-batch") or {}).get("result") or {}).get("fault")
    if not fault:
        return []
    if "skipped" in fault:
        return [f"Skipped: {fault['skipped']}."]
    return [
        f"- Injector exit {fault['injector_exit']}: `{fault['injector_output'].strip()[-160:]}`",
        (f"- Statuses before the fault: {fault['statuses_before']}; from the fault until the first 200 of a request sent "
        f"after it: {fault['statuses_until_recovery']}"),
        (f"- Answered again after {_s(fault['recovered_after_s'], 1)} s (waited up to {fault['waited_s']:.0f} s); "
        f"replicas that logged a wedged context: {fault['wedged_lines']}"),
    ]


def embedded(result: dict[str, Any] | None, title: str) -> list[str]:
    """A step's own markdown table (kept in its result, so later parts render it too)."""
    text = (result or {}).get("markdown")
    return [f"### {title}", "", text.strip(), ""] if text else []


def result_of(steps: dict[str, Any], key: str) -> dict[str, Any] | None:
    return (steps.get(key) or {}).get("result")


def capacity_command(out: Path, results: dict[str, Any]) -> list[str]:
    """The capacity model fed with this run's times (the coordinator's re-fit)."""
    check = ((results.get("steps", {}).get("flux_check") or {}).get("result") or {}).get("speed") or {}
    batch = str(results.get("max_batch_size", 1))
    batched = f" --batched text_to_image={batch}:{check[batch]['call_s']:.3f}" if batch in check else ""
    return [
        "```bash",
        (f"python -m scripts.capacity --gpus 1 --config configs/serve_random.yaml --bench {out}/mps-batch/bench/bench.json "
        f"--timeline {out}/mps-batch/timeline.json{batched} --measured 1=ASSETS_PER_S_AT_8"),
        "```",
    ]


def write_summary(results: dict[str, Any], path: Path) -> None:
    """Render every result in ``results`` (results.json's content) to ``path``."""
    out = path.parent
    steps = results.get("steps", {})
    environment = next((s["result"] for k, s in reversed(steps.items()) if k.startswith("environment") and "result" in s), {})
    sweep_lines, stage_lines = graph_rows(steps)
    lines = [
        "# One card near its limit: results of scripts/card_limit.py",
        "",
        (f"Machine: {environment.get('gpus', 'no GPU')}; {environment.get('cpus')} cores; torch {environment.get('torch')}, "
        f"triton {environment.get('triton')}, diffusers {environment.get('diffusers')}, torchao {environment.get('torchao')}, "
        f"ray {environment.get('ray')}; MPS control: {environment.get('mps_binary')}. FLUX batch size: {results.get('max_batch_size', '–')}."),
        "",
        "## Steps",
        "",
        *steps_table(steps),
        "",
        "## Text → UV GLB 20k faces: throughput and latency (full-size random weights)",
        "",
        *sweep_lines,
        "",
        *ratios(steps),
        "",
        "Stage medians at 8 clients (Server-Timing, s):",
        "",
        *stage_lines,
        "",
        "## GPU timelines (one request at a time, then 8 clients)",
        "",
    ]
    for name, label in GRAPHS.items():
        lines += embedded((result_of(steps, name) or {}).get("timeline"), label)
    lines += ["## FLUX at full size", ""]
    lines += embedded(result_of(steps, "flux_check"), "Batched images against alone; seconds per batch size")
    lines += embedded(result_of(steps, "kernels"), "Attention backends against the default")
    lines += ["## A fatal GPU fault under MPS (MPS on, batching, 8 clients)", "", *fault_lines(steps), "", "## Capacity model", ""]
    lines += capacity_command(out, results)
    path.write_text("\n".join(lines) + "\n")
