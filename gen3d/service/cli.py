"""The ``gen3d`` command: make assets with a running service, start a service, check its health.

``gen3d generate "a red chair" -o chair.glb`` posts to ``/generate``, writes the file and prints
the per-stage ``Server-Timing``. ``gen3d serve [CONFIG]`` runs the pre-flight, then hands over to
``serve run`` (Ray is never imported here). ``gen3d health`` asks ``/health``. Both ``generate``
and ``health`` speak HTTP through ``gen3d.client.Client``.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import httpx
from pydantic import ValidationError

from gen3d.client import DEFAULT_RETRIES, DEFAULT_URL, ApiError, Client
from gen3d.resources import (
    DEFAULT_SERVE_CONFIG,
    serve_config_path,
    shipped_serve_configs,
)
from gen3d.service.api import MESH_FIELDS, GenerateRequest, first_validation_error

SERVE_HINT = "start one with: gen3d serve (CPU demo: gen3d serve configs/serve_tiny.yaml)"
AUTH_HINT = (
    "In another shell, `export RAY_AUTH_MODE=token` makes `serve status` and `ray status` send the "
    "token this cluster requires; `ray get-auth-token` prints the token its dashboard asks for (the address is in "
    "Ray's \"View the dashboard at\" line below)."
)


def _err(message: str) -> None:
    print(message, file=sys.stderr)


# --- generate ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputChoice:
    """What to ask the service for, decided from ``-o`` and ``--format``/``--texture``.

    Attributes:
        format: the request's ``format``.
        texture: the request's ``texture``, or None to leave the service's default.
        note: a line to show the user when the file name alone was ambiguous.
    """

    format: str
    texture: str | None
    note: str | None = None


def choose_output(output: Path | None, fmt: str | None, texture: str | None) -> OutputChoice:
    """Pick the format from the output file's extension unless ``fmt`` is given.

    The extensions come from the format registry (``gen3d.formats``). An extension that several
    formats write (``.ply``: a mesh PLY or a Gaussian-splat PLY) gets the mesh format and a note
    saying how to ask for the other. An extension only one texture mode writes (``.obj``: vertex
    colours, ``.zip``: a textured OBJ) pins ``texture``.

    Raises:
        ValueError: an unknown format or texture, or an extension that fits no format or
            contradicts ``fmt``/``texture``.
    """
    from gen3d.formats import FORMATS, TextureMode, get_format

    if fmt is not None:
        get_format(fmt)
    if texture is not None and texture not in get_args(TextureMode):
        raise ValueError(f"texture: expected one of {list(get_args(TextureMode))}, got {texture!r}")
    if output is None:
        return OutputChoice(fmt or "glb", texture)
    ext = output.suffix.lstrip(".").lower()
    candidates = [
        (name, mode)
        for name, entry in FORMATS.items()
        for mode, kind in entry.files.items()
        if kind.extension == ext and fmt in (None, name) and texture in (None, mode)
    ]
    if not candidates:
        known = sorted({kind.extension for entry in FORMATS.values() for kind in entry.files.values()})
        asked = " ".join(f"--{key} {value}" for key, value in (("format", fmt), ("texture", texture)) if value)
        raise ValueError(
            f"output: {output.name!r} does not fit {asked or 'any format'}; "
            f"use one of the extensions {['.' + e for e in known]}, or give --format"
        )
    formats = list(dict.fromkeys(name for name, _ in candidates))
    meshes = [name for name in formats if FORMATS[name].product == "mesh"]
    chosen = meshes[0] if meshes else formats[0]
    note = None
    if len(formats) > 1:
        others = " or ".join(f"--format {name}" for name in formats if name != chosen)
        note = f"note: .{ext} fits formats {formats}; writing a {chosen} {FORMATS[chosen].product}. For the other, add {others}."
    modes = [mode for name, mode in candidates if name == chosen]
    if texture is None and len(modes) == 1 and len(FORMATS[chosen].files) > 1:
        texture = modes[0]
    return OutputChoice(chosen, texture, note)


def default_output(media_type: str) -> Path:
    """``asset.<ext>`` for the media type the service answered with."""
    from gen3d.formats import FORMATS

    for entry in FORMATS.values():
        for kind in entry.files.values():
            if kind.media_type == media_type.split(";")[0].strip():
                return Path(f"asset.{kind.extension}")
    return Path("asset.bin")


def generate_request(args: argparse.Namespace, choice: OutputChoice) -> GenerateRequest:
    """The ``POST /generate`` body; fields the user left out take the service's defaults (unsent).

    Raises:
        InputError: a field the request model refuses (named), before anything is sent.
    """
    fields: dict[str, object] = {"format": choice.format, "seed": args.seed}
    for name in ("steps", "up", *MESH_FIELDS):
        value = choice.texture if name == "texture" else getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.image is not None:
        fields["image"] = base64.b64encode(args.image.read_bytes()).decode("ascii")
    else:
        fields["prompt"] = args.prompt
    try:
        return GenerateRequest(**fields)
    except ValidationError as err:
        raise first_validation_error(err) from None


def client_for(args: argparse.Namespace, sleep: Callable[[float], None]) -> Client:
    """A ``Client`` for the command's ``--url`` (and key, time-out and retries), telling each 503 retry."""

    def tell(attempt: int, retries: int, wait: float) -> None:
        _err(f"service busy or starting (503); retry {attempt} of {retries} in {wait:g} s")

    # `health` has no key, time-out or retries of its own: it polls on its own schedule.
    api_key, timeout, retries = getattr(args, "api_key", None), getattr(args, "timeout", 10.0), getattr(args, "retries", 0)
    return Client(args.url, api_key, timeout, retries, sleep, tell)


def print_timings(timings: dict[str, float]) -> None:
    """One line per stage of the service's ``Server-Timing``, in seconds."""
    for stage, seconds in timings.items():
        print(f"  {stage:<14} {seconds:8.3f} s")


def cmd_generate(args: argparse.Namespace, sleep: Callable[[float], None]) -> int:
    """``gen3d generate``: one asset from a prompt or an image."""
    try:
        choice = choose_output(args.output, args.format, args.texture)
        request = generate_request(args, choice)
    except ValueError as err:
        _err(f"gen3d generate: {err}")
        return 2
    if choice.note:
        _err(choice.note)
    start = time.perf_counter()
    try:
        with client_for(args, sleep) as client:
            asset = client.generate(request)
    except httpx.TransportError as err:
        _err(f"cannot reach a gen3d service at {args.url} ({err}); {SERVE_HINT}")
        return 1
    except ApiError as err:
        _err(str(err))
        return 1
    elapsed = time.perf_counter() - start
    output = args.output or default_output(asset.media_type)
    output.write_bytes(asset.data)
    print(f"wrote {output} ({len(asset.data):,} bytes, {choice.format}) in {elapsed:.3f} s")
    print_timings(asset.timings)
    return 0


# --- health and serve -------------------------------------------------------------------------------


def cmd_health(args: argparse.Namespace, sleep: Callable[[float], None]) -> int:
    """``gen3d health``: 0 once ``/health`` answers 200 (within ``--wait`` seconds), else 1."""
    try:
        with client_for(args, sleep) as client:
            health = client.wait_until_ready(args.wait)
    except ApiError as err:
        _err(f"not ready ({err.status}): {err}")
        return 1
    except httpx.TransportError as err:
        _err(f"not ready (no answer): cannot reach {args.url} ({err}); {SERVE_HINT}")
        return 1
    print(f"ready: {json.dumps(health.model_dump())}")
    return 0


def serve_command(config: Path) -> list[str]:
    """The launcher for ``config`` (``serve run`` with a graceful stop), with this interpreter."""
    return [sys.executable, "-m", "gen3d.service.launcher", str(config)]


def ray_env(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with ``RAY_AUTH_MODE=token`` unless the user chose a mode.

    ``serve run`` turns token auth on for the cluster it starts either way; stating it makes the
    Ray processes say so without a warning, and a user's own choice is kept.
    """
    return {**environ, "RAY_AUTH_MODE": environ.get("RAY_AUTH_MODE", "token")}


def run_precompile(config: Path) -> int:
    """``gen3d.service.precompile`` for ``config``'s preset: fills its compile cache on first use."""
    command = [sys.executable, "-m", "gen3d.service.precompile", "--serve-config", str(config)]
    return subprocess.run(command, check=False).returncode


def cmd_serve(
    args: argparse.Namespace,
    execute: Callable[[str, list[str], dict[str, str]], None] = os.execve,
    precompile: Callable[[Path], int] = run_precompile,
) -> int:
    """``gen3d serve``: pre-flight, then replace this process by the launcher.

    CONFIG is a file, or the name of one gen3d ships (``configs/serve_tiny.yaml`` works from any
    directory). The launcher (``gen3d.service.launcher``) runs ``serve run`` and, on Ctrl-C or
    SIGTERM, drains the requests in flight before it stops Serve. A preset that compiles FLUX is
    precompiled first (a no-op once its compile cache holds this machine's artifacts). ``--host``,
    ``--port`` and ``GEN3D_API_KEY`` make a private copy of the config (``gen3d.service.binding``).

    Returns:
        2 when the pre-flight fails (``execute`` never returns otherwise).
    """
    from gen3d.service.binding import effective_config
    from gen3d.service.preflight import PreflightError, check_serve_config, preset_of

    config = serve_config_path(args.config)
    try:
        notes = check_serve_config(config)
        config = effective_config(config, args.host, args.port, args.allow_no_api_key, dict(os.environ))
        compiles = preset_of(config)[1].text_to_image.compile
    except PreflightError as err:
        _err(f"gen3d serve: {err}")
        return 2
    for note in notes:
        print(note)
    print(AUTH_HINT)
    sys.stdout.flush()
    if compiles and precompile(config) != 0:
        _err("gen3d serve: precompiling FLUX failed (its output is above)")
        return 2
    command = serve_command(config)
    execute(command[0], command, ray_env(dict(os.environ)))
    return 0


# --- the parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gen3d", description="Make 3D assets with a running gen3d service, start a service, check its health."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="make one asset from a text prompt or an image")
    generate.add_argument("prompt", nargs="?", help="text prompt (omit with --image)")
    generate.add_argument("--image", type=Path, help="PNG/JPEG/WebP to lift to 3D instead of a prompt")
    generate.add_argument("-o", "--output", type=Path, help="output file; its extension picks the format")
    generate.add_argument("--format", help="glb, obj, ply (meshes) or splat (default: from the extension)")
    generate.add_argument("--texture", help="mesh colours: vertex, or uv (a baked atlas)")
    generate.add_argument("--texture-size", type=int, help="UV atlas side in texels")
    generate.add_argument("--faces", type=int, help="target triangle count of a mesh")
    generate.add_argument("--resolution", type=int, help="marching-cubes grid points per axis")
    generate.add_argument("--normalize", action=argparse.BooleanOptionalAction, help="centre and scale meshes to 1")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--steps", type=int, help="denoising steps (text prompts)")
    generate.add_argument("--up", help="up axis of a splat: +y or -y")
    generate.add_argument("--url", default=DEFAULT_URL, help=f"service base URL (default {DEFAULT_URL})")
    generate.add_argument("--api-key", help="the X-API-Key header, if the service needs one")
    generate.add_argument("--timeout", type=float, default=300.0, help="seconds per HTTP request")
    generate.add_argument("--retries", type=int, default=DEFAULT_RETRIES, help="503 answers to retry")

    serve = commands.add_parser("serve", help="check this machine can run CONFIG, then `serve run` it")
    serve.add_argument(
        "config", nargs="?", default=DEFAULT_SERVE_CONFIG,
        help=f"serve config: a file, or one gen3d ships ({', '.join(shipped_serve_configs())}); default {DEFAULT_SERVE_CONFIG}",
    )
    serve.add_argument("--host", help="listen here instead (0.0.0.0: every interface, which needs GEN3D_API_KEY)")
    serve.add_argument("--port", type=int, help="listen on this port instead")
    serve.add_argument("--allow-no-api-key", action="store_true",
                       help="listen beyond this machine without an API key (a firewall or proxy guards the port)")

    health = commands.add_parser("health", help="ask a service whether it is ready")
    health.add_argument("--url", default=DEFAULT_URL)
    health.add_argument("--wait", type=float, default=0.0, help="keep asking for up to this many seconds")
    return parser


def main(argv: list[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Run one ``gen3d`` command; ``sleep`` waits between retries (tests record it instead)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate":
        if (args.prompt is None) == (args.image is None):
            parser.error("generate: give a text prompt or --image, not both")
        return cmd_generate(args, sleep)
    if args.command == "serve":
        return cmd_serve(args)
    return cmd_health(args, sleep)


if __name__ == "__main__":
    sys.exit(main())
