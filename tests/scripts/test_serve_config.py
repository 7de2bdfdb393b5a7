"""scripts/serve_config.py: the committed N-GPU configs are its output, pass Ray's schema and
GraphArgs, and place, cap and size their replicas as their comments say."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments._runtime import STAGE_OPTIONS
from gen3d.config import load_preset
from gen3d.service.api import ServiceConfig
from gen3d.service.job_store import JobStoreConfig
from graph import GraphArgs
from scripts import serve_config
from scripts.capacity import Workload, layout_from_config, place
from scripts.serve_config import CPU_BUSY, FLUX_SHARE

ROOT = Path(__file__).resolve().parents[2]
GPU_COUNTS = (1, 2, 4, 8)
STAGES = ("TextToImageDeployment", "BackgroundDeployment", "ImageTo3DDeployment", "ExportDeployment")


def generate(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = serve_config.main([*args, "--out", "-"])
    captured = capsys.readouterr()
    return code, captured.out if code == 0 else captured.err


def committed(gpus: int) -> dict:
    return yaml.safe_load((ROOT / "configs" / f"serve_gpus_{gpus}.yaml").read_text())


def by_name(config: dict) -> dict[str, dict]:
    return {d["name"]: d for d in config["applications"][0]["deployments"]}


@pytest.mark.parametrize("gpus", GPU_COUNTS)
def test_committed_config_is_the_generators_output(capsys: pytest.CaptureFixture, gpus: int) -> None:
    code, text = generate(capsys, "--gpus", str(gpus))
    assert code == 0
    path = ROOT / "configs" / f"serve_gpus_{gpus}.yaml"
    assert text == path.read_text(), f"{path.name} drifted: run python -m scripts.serve_config --gpus {gpus}"


@pytest.mark.parametrize("gpus", GPU_COUNTS)
def test_configs_pass_rays_schema_and_graph_args(gpus: int) -> None:
    config = committed(gpus)
    ServeDeploySchema.model_validate(config)
    assert config["http_options"]["host"] == "127.0.0.1"
    args = GraphArgs.model_validate(config["applications"][0]["args"])
    assert load_preset(args.preset, args.overrides).text_to_image.precision == "fp8"
    deployments = by_name(config)
    ServiceConfig.model_validate(deployments["Ingress"]["user_config"])
    JobStoreConfig.model_validate(deployments["SharedState"]["user_config"])
    for name in STAGES:
        deployment = deployments[name]
        assert not set(STAGE_OPTIONS) & set(deployment), f"{name} repeats a decorator option"
        assert {"num_cpus", "num_gpus"} <= set(deployment["ray_actor_options"])
        auto = deployment["autoscaling_config"]
        assert 1 <= auto["min_replicas"] <= auto["max_replicas"]
        assert auto["upscale_delay_s"] < auto["downscale_delay_s"]


@pytest.mark.parametrize("gpus", GPU_COUNTS)
def test_each_card_gets_one_flux_and_the_minimum_fits_beside_any_flux(gpus: int) -> None:
    config = committed(gpus)
    deployments = by_name(config)
    flux = deployments["TextToImageDeployment"]
    assert flux["ray_actor_options"]["num_gpus"] > 0.5 and flux["autoscaling_config"]["max_replicas"] == gpus
    side = [d for name, d in deployments.items() if name in STAGES and name != "TextToImageDeployment"]
    gpu_side = [d for d in side if d["ray_actor_options"]["num_gpus"] > 0]
    # Whatever order replicas start in, the side stages' minimum leaves room for a FLUX on their card.
    at_least = sum(d["ray_actor_options"]["num_gpus"] * d["autoscaling_config"]["min_replicas"] for d in gpu_side)
    assert at_least + flux["ray_actor_options"]["num_gpus"] <= 1.0
    for counts in ("min", "max"):  # every replica finds a card, and each card holds one FLUX
        layout = layout_from_config(config, gpus, 16.0 * gpus, counts)
        cards = sorted(r.card for r in layout.replicas if r.deployment == "TextToImageDeployment")
        assert cards == list(range(gpus))


@pytest.mark.parametrize("gpus", GPU_COUNTS)
def test_cpu_stages_stay_half_busy_at_the_full_gpu_rate(gpus: int) -> None:
    workload = Workload()
    caps = serve_config.gpu_caps(serve_config.PRESET)
    rate = gpus / sum(workload.work_s(name) for name in caps)
    deployments = by_name(committed(gpus))
    on_cpu = [name for name in STAGES if deployments[name]["ray_actor_options"]["num_gpus"] == 0]
    assert on_cpu, "no CPU stage to check"
    for name in on_cpu:
        low = deployments[name]["autoscaling_config"]["min_replicas"]
        assert rate * workload.work_s(name) / low <= CPU_BUSY
        assert low == 1 or rate * workload.work_s(name) / (low - 1) > CPU_BUSY  # the fewest that do


def test_small_cards_get_fewer_triposr_slots_and_too_small_ones_are_refused(capsys: pytest.CaptureFixture) -> None:
    code, text = generate(capsys, "--gpus", "1", "--card-gib", "24")
    assert code == 0
    small = by_name(yaml.safe_load(text))
    assert small["ImageTo3DDeployment"]["autoscaling_config"]["max_replicas"] < by_name(committed(1))[
        "ImageTo3DDeployment"]["autoscaling_config"]["max_replicas"]  # fmt: skip
    caps = serve_config.gpu_caps(serve_config.PRESET)
    side = {n: d["ray_actor_options"]["num_gpus"] for n, d in small.items() if n in caps and n != "TextToImageDeployment"}
    assert serve_config.worst_card_gib(side, caps) <= 24
    code, error = generate(capsys, "--gpus", "1", "--card-gib", "20")
    assert code == 2 and "--card-gib" in error


def test_slow_export_gets_more_replicas_and_too_few_cores_are_refused(capsys: pytest.CaptureFixture) -> None:
    code, text = generate(capsys, "--gpus", "2", "--seconds", "export=0.5")
    assert code == 0
    export = by_name(yaml.safe_load(text))["ExportDeployment"]["autoscaling_config"]
    assert export["min_replicas"] > by_name(committed(2))["ExportDeployment"]["autoscaling_config"]["min_replicas"]
    code, error = generate(capsys, "--gpus", "2", "--seconds", "export=2.0", "--cpus-per-gpu", "4")
    assert code == 2 and "--cpus-per-gpu" in error


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_presets_devices_decide_which_stages_share_the_cards(tmp_path: Path, capsys: pytest.CaptureFixture, device: str) -> None:
    preset = yaml.safe_load((ROOT / "configs" / "fast.yaml").read_text())
    preset["background"].update(device=device, gpu_memory_gib=1.0 if device == "cuda" else None)
    path = tmp_path / f"background_{device}.yaml"
    path.write_text(yaml.safe_dump(preset))
    code, text = generate(capsys, "--gpus", "2", "--preset", str(path))
    assert code == 0
    config = yaml.safe_load(text)
    ServeDeploySchema.model_validate(config)
    deployments = by_name(config)
    background = deployments["BackgroundDeployment"]["ray_actor_options"]
    args = config["applications"][0]["args"]
    if device == "cpu":  # onnxruntime's threads match the cores the replica holds
        assert background["num_gpus"] == 0 and args["overrides"]["background"]["threads"] == background["num_cpus"]
    else:
        assert background["num_gpus"] > 0 and "overrides" not in args
    gpu = {n: d for n, d in deployments.items() if n in STAGES and d["ray_actor_options"]["num_gpus"] > 0}
    beside = [d for n, d in gpu.items() if n != "TextToImageDeployment"]
    slots = serve_config.SIDE_SLOTS
    assert sum(d["ray_actor_options"]["num_gpus"] * slots[d["name"]] for d in beside) <= 1.0 - FLUX_SHARE
    place([(n, d["ray_actor_options"]["num_gpus"], 1)
           for n, d in gpu.items() for _ in range(d["autoscaling_config"]["max_replicas"])], 2)  # fmt: skip


def test_render_round_trips_and_every_deployment_keeps_its_note() -> None:
    args = serve_config.parse_args(["--gpus", "2"])
    config, notes, lines = serve_config.build(args)
    text = serve_config.render(config, notes, lines)
    assert yaml.safe_load(text) == config
    assert all(len(line) <= 100 for line in text.splitlines() if line.lstrip().startswith("#"))
    lines = text.splitlines()
    for name in ("Ingress", *STAGES):
        assert lines[lines.index(f"  - name: {name}") - 1].startswith("  # ")
