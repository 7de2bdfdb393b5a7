"""The ``gen3d`` command: make assets with a running service, start a service, check its health.

``gen3d generate "a red chair" -o chair.glb`` posts to ``/generate``, writes the file and prints
the per-stage ``Server-Timing``. ``gen3d serve [CONFIG]`` runs the pre-flight, then hands over to
``serve run`` (Ray is never imported here). ``gen3d health`` asks ``/health``.
"""

import argparse
import base64
import email.utils
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import get_args

import httpx

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "http://127.0.0.1:8093"
DEFAULT_CONFIG = "serve_config.yaml"
#: 503s retried before giving up, and the longest single wait (a larger Retry-After is capped).
DEFAULT_RETRIES = 5
MAX_RETRY_WAIT_S = 30.0
#: Wait when a 503 carries no usable Retry-After.
FALLBACK_RETRY_WAIT_S = 2.0
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


def request_body(args: argparse.Namespace, choice: OutputChoice) -> dict[str, object]:
    """The ``POST /generate`` JSON body; fields the user left out take the service's defaults."""
    from gen3d.service.api import MESH_FIELDS

    body: dict[str, object] = {"format": choice.format, "seed": args.seed}
    for name in ("steps", "up", *MESH_FIELDS):
        value = choice.texture if name == "texture" else getattr(args, name)
        if value is not None:
            body[name] = value
    if args.image is not None:
        body["image"] = base64.b64encode(args.image.read_bytes()).decode("ascii")
    else:
        body["prompt"] = args.prompt
    return body


def retry_after_s(header: str | None, now: datetime | None = None) -> float:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), capped.

    Returns:
        A wait in [0, MAX_RETRY_WAIT_S]; ``FALLBACK_RETRY_WAIT_S`` when the header is absent or unreadable.
    """
    if not header:
        return FALLBACK_RETRY_WAIT_S
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return FALLBACK_RETRY_WAIT_S
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_WAIT_S)


def post_with_retries(
    client: httpx.Client, body: dict[str, object], retries: int, sleep: Callable[[float], None]
) -> httpx.Response:
    """``POST /generate``, retrying a 503 (full or starting) up to ``retries`` times after its Retry-After."""
    attempt = 0
    while True:
        response = client.post("/generate", json=body)
        if response.status_code != 503 or attempt == retries:
            return response
        attempt += 1
        wait = retry_after_s(response.headers.get("retry-after"))
        _err(f"service busy or starting (503); retry {attempt} of {retries} in {wait:g} s")
        sleep(wait)


def describe_error(response: httpx.Response) -> str:
    """``error 422 (field prompt): ...`` from the service's JSON error, else the raw text."""
    try:
        payload = response.json()
    except ValueError:
        return f"error {response.status_code}: {response.text[:500]}"
    field = f" (field {payload['field']})" if isinstance(payload, dict) and payload.get("field") else ""
    message = payload.get("error", payload) if isinstance(payload, dict) else payload
    return f"error {response.status_code}{field}: {message}"


def print_timings(header: str) -> None:
    """One line per stage of the service's ``Server-Timing`` header, in seconds."""
    from gen3d.service.api import parse_server_timing

    for stage, seconds in parse_server_timing(header).items():
        print(f"  {stage:<14} {seconds:8.3f} s")


def cmd_generate(args: argparse.Namespace, sleep: Callable[[float], None]) -> int:
    """``gen3d generate``: one asset from a prompt or an image."""
    try:
        choice = choose_output(args.output, args.format, args.texture)
    except ValueError as err:
        _err(f"gen3d generate: {err}")
        return 2
    if choice.note:
        _err(choice.note)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    start = time.perf_counter()
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
            response = post_with_retries(client, request_body(args, choice), args.retries, sleep)
    except httpx.TransportError as err:
        _err(f"cannot reach a gen3d service at {args.url} ({err}); {SERVE_HINT}")
        return 1
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        _err(describe_error(response))
        return 1
    output = args.output or default_output(response.headers.get("content-type", ""))
    output.write_bytes(response.content)
    print(f"wrote {output} ({len(response.content):,} bytes, {choice.format}) in {elapsed:.3f} s")
    print_timings(response.headers.get("server-timing", ""))
    return 0


# --- health and serve -------------------------------------------------------------------------------


def cmd_health(args: argparse.Namespace, sleep: Callable[[float], None]) -> int:
    """``gen3d health``: 0 once ``/health`` answers 200 (within ``--wait`` seconds), else 1."""
    deadline = time.monotonic() + args.wait
    while True:
        try:
            response = httpx.get(f"{args.url}/health", timeout=10.0)
        except httpx.TransportError as err:
            status, detail, wait = None, f"cannot reach {args.url} ({err}); {SERVE_HINT}", FALLBACK_RETRY_WAIT_S
        else:
            status, detail = response.status_code, response.text.strip()
            wait = retry_after_s(response.headers.get("retry-after"))
        if status == 200:
            print(f"ready: {detail}")
            return 0
        if time.monotonic() + wait > deadline:
            _err(f"not ready ({status or 'no answer'}): {detail}")
            return 1
        sleep(wait)


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
    """``scripts/precompile.py`` for ``config``'s preset: fills its compile cache on first use."""
    return subprocess.run([sys.executable, "-m", "scripts.precompile", "--serve-config", str(config)], cwd=ROOT).returncode


def cmd_serve(
    args: argparse.Namespace,
    execute: Callable[[str, list[str], dict[str, str]], None] = os.execve,
    precompile: Callable[[Path], int] = run_precompile,
) -> int:
    """``gen3d serve``: pre-flight, then replace this process by the launcher in the checkout.

    The launcher (``gen3d.service.launcher``) runs ``serve run`` and, on Ctrl-C or SIGTERM, drains the
    requests in flight before it stops Serve. A preset that compiles FLUX is precompiled first
    (a no-op once its compile cache holds this machine's artifacts).

    Returns:
        2 when the pre-flight fails (``execute`` never returns otherwise).
    """
    from gen3d.service.preflight import PreflightError, check_serve_config, preset_of

    config = Path(args.config).expanduser().resolve()
    try:
        notes = check_serve_config(config)
        compiles = preset_of(config)[1].text_to_image.compile
        if not (ROOT / "graph.py").is_file():
            raise PreflightError(f"gen3d serve runs from a source checkout (graph.py), and {ROOT} has none")
    except PreflightError as err:
        _err(f"gen3d serve: {err}")
        return 2
    for note in notes:
        print(note)
    print(AUTH_HINT)
    sys.stdout.flush()
    if compiles and precompile(config) != 0:
        _err("gen3d serve: scripts/precompile.py failed (its output is above)")
        return 2
    # Serve imports graph:build_app from its working directory: the checkout.
    os.chdir(ROOT)
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
    serve.add_argument("config", nargs="?", default=str(ROOT / DEFAULT_CONFIG), help=f"serve config (default {DEFAULT_CONFIG})")

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
