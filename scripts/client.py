"""Command-line client: ``python scripts/client.py "a blue cube" -o cube.glb``.

Sends a text prompt (or ``--image photo.png``) to a running gen3d service, writes the file and
prints the per-stage timings the service reported in its ``Server-Timing`` header.
"""

import argparse
import base64
import sys
import time
from pathlib import Path

import httpx

from gen3d.api import OUTPUT_FORMATS, parse_server_timing



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", help="text prompt (omit with --image)")
    parser.add_argument("--image", type=Path, help="image file to lift to 3D instead of a prompt")
    parser.add_argument("-o", "--output", type=Path, help="output file (default: asset.<format>)")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, help="default: from the output suffix, else glb")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--up", choices=("+y", "-y"), default="+y", help="splat up axis")
    parser.add_argument("--url", default="http://127.0.0.1:8093", help="service base URL")
    parser.add_argument("--api-key", help="value of the X-API-Key header, if the service needs one")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if (args.prompt is None) == (args.image is None):
        parser.error("give a text prompt or --image, not both")
    return args


def output_format(args: argparse.Namespace) -> str:
    """The explicit ``--format``, else the output file's suffix, else GLB."""
    if args.format:
        return args.format
    suffix = args.output.suffix.lstrip(".").lower() if args.output else ""
    return suffix if suffix in OUTPUT_FORMATS else "glb"


def request_body(args: argparse.Namespace, fmt: str) -> dict:
    body: dict = {"seed": args.seed, "format": fmt, "up": args.up}
    if args.steps is not None:
        body["steps"] = args.steps
    if args.image is not None:
        body["image"] = base64.b64encode(args.image.read_bytes()).decode("ascii")
    else:
        body["prompt"] = args.prompt
    return body


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fmt = output_format(args)
    output = args.output or Path(f"asset.{'ply' if fmt == 'splat' else fmt}")
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    start = time.perf_counter()
    response = httpx.post(f"{args.url}/generate", json=request_body(args, fmt), headers=headers, timeout=args.timeout)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        print(f"error {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    output.write_bytes(response.content)
    print(f"wrote {output} ({len(response.content):,} bytes) in {elapsed:.3f} s")
    for stage, seconds in parse_server_timing(response.headers.get("server-timing", "")).items():
        print(f"  {stage:<14} {seconds:8.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
