"""Compile the text_to_image stage once per versions key and save the artifacts its replicas load.

    python -m gen3d.service.precompile --serve-config serve_config.yaml   # what `gen3d serve` runs first
    python -m gen3d.service.precompile --preset fast --force              # recompile although artifacts exist

Starts the stage exactly as its replica will (same preset, same weights, same settings, and the
environment variables the serve config gives the replica, or the capped-allocator setting every
generated config gives it), warms it up, which compiles every allowed shape, and writes ``<compile_cache_dir>/<key>/artifacts.bin``
(see ``gen3d.parts.compile_cache``). The key names the torch, Triton, torchao, diffusers, transformers,
Python and CUDA versions, the GPU model and the driver, so after an upgrade this compiles again
into a new folder, and replicas log which versions changed until it has. When the key's artifacts
exist it returns at once, as it does for a preset that compiles nothing (``compile: false``). A
preset that compiles without a ``compile_cache_dir`` is an error: its replicas would compile on
every start.

On a 24 GB card run it before ``serve run`` (``gen3d serve`` does), not beside running replicas: it
loads its own copy of FLUX. It lives in the package, so an installed gen3d (a wheel, the image)
runs it without a checkout.
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from gen3d.config import TextToImageConfig, load_preset, parse_overrides
from gen3d.devices import CAPPED_ALLOCATOR_ENV, resolve_device
from gen3d.parts.compile_cache import CompileCache, save_artifacts
from gen3d.service.preflight import DEFAULT_PRESET, PreflightError, gen3d_application
from gen3d.stages.text_to_image import TextToImage

logger = logging.getLogger(__name__)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--serve-config", default=None, help="a serve YAML; its application's preset and overrides")
    source.add_argument("--preset", default=None, help="preset name or YAML path (default: the serve builder's)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="text_to_image override, repeatable (after the serve config's overrides)")
    parser.add_argument("--force", action="store_true", help="compile and save even if this key has artifacts")
    return parser.parse_args()


def graph_args(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The serve config's (or preset's) builder args (``preset``, ``overrides``), and the text_to_image
    replica's env vars."""
    if args.serve_config is None:
        return {"preset": args.preset or DEFAULT_PRESET, "overrides": {}}, dict(CAPPED_ALLOCATOR_ENV)
    application = gen3d_application(Path(args.serve_config))
    env: dict[str, str] = {}
    for deployment in application.get("deployments") or []:
        if deployment.get("name") == "TextToImageDeployment":
            runtime_env = (deployment.get("ray_actor_options") or {}).get("runtime_env") or {}
            env = {str(k): str(v) for k, v in (runtime_env.get("env_vars") or {}).items()}
    builder = application.get("args") or {}
    return {"preset": builder.get("preset", DEFAULT_PRESET), "overrides": builder.get("overrides") or {}}, env


def stage_config(graph: dict[str, Any], sets: list[str]) -> TextToImageConfig:
    """The text_to_image config the replicas will use: the graph's preset and overrides, plus ``--set``."""
    overrides = dict(graph["overrides"])
    overrides["text_to_image"] = {**overrides.get("text_to_image", {}), **parse_overrides(sets)}
    return load_preset(graph["preset"], overrides).text_to_image


def precompile(cfg: TextToImageConfig, force: bool) -> CompileCache | None:
    """Warm the stage up and save its artifacts, unless they exist (and not ``force``).

    Returns:
        The key's cache folder, or None when the config compiles nothing.

    Raises:
        ValueError: the config compiles but keeps no cache folder.
    """
    if not cfg.compile:
        logger.info("precompile: text_to_image.compile is false; nothing to precompile")
        return None
    if cfg.compile_cache_dir is None:
        raise ValueError(
            "text_to_image: compile is on but compile_cache_dir is unset, so every replica start would compile; "
            "set compile_cache_dir (e.g. ~/.cache/gen3d/compile) in the preset"
        )
    cache = CompileCache.for_device(cfg.compile_cache_dir, resolve_device(cfg.device))
    if cache.artifacts.is_file() and not force:
        logger.info("precompile: %s already holds this key's artifacts; nothing to do", cache.directory)
        return cache
    start = time.perf_counter()
    stage = TextToImage.from_config(cfg)
    stage.warmup()
    counts = save_artifacts(cache)
    logger.info("precompile: %s in %.0f s (%s)", cache.artifacts, time.perf_counter() - start, counts)
    return cache


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    graph, env = graph_args(args)
    missing = {name: value for name, value in env.items() if name not in os.environ}
    if missing:
        # Without the replica's allocator setting a memory-capped FLUX failed its cap check here on
        # the GPU box, even when set at this point: torch reads it once, and the imports above may
        # already have. So start again with it from the first instruction; set variables win.
        os.execve(sys.executable, sys.orig_argv, {**os.environ, **missing})
    try:
        cache = precompile(stage_config(graph, args.set), args.force)
    except (ValueError, PreflightError) as err:
        sys.exit(f"precompile: {err}")
    if cache is not None:
        print(cache.artifacts)


if __name__ == "__main__":
    main()
