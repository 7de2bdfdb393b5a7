"""The web studio page and offline API docs: an allowlist of static files, nothing from a CDN.

``router`` serves ``GET /`` and ``GET /studio`` (the page) and ``GET /static/<fingerprint>/<name>``
for an explicit allowlist: our ``web/`` files and the few ``node_modules`` files the page and
Swagger UI load. The fingerprint hashes every allowlisted file, so a new build gets new URLs and
the files can be cached for a year; the page itself is revalidated on every load. The page and
its files carry no secret, so they stay open when the service has an API key: the page asks for
the key itself.
"""

import base64
import functools
import gzip
import hashlib
import json
import logging
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from deployments.errors import ErrorReply, error_response

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "web"
NPM_INSTALL = "npm ci --ignore-scripts --no-audit --no-fund"

# Our files, served as /static/<fingerprint>/<name>.
WEB_FILES = (
    "studio.css", "results.css", "studio.js", "api.js", "form.js", "job_view.js", "gallery.js", "mesh_viewer.js",
    "mesh_files.js", "splat_viewer.js",
)
# node_modules files, served as /static/<fingerprint>/vendor/<path>. Paths keep their layout, so
# three's relative import (./three.core.min.js) and the page's import map resolve inside the list.
VENDOR_FILES = (
    # model-viewer without its own copy of three: it imports "three", the same one Spark uses.
    "@google/model-viewer/dist/model-viewer-module.min.js",
    "three/build/three.module.min.js",
    "three/build/three.core.min.js",
    "three/examples/jsm/controls/OrbitControls.js",
    "three/examples/jsm/postprocessing/Pass.js",
    # OBJ/PLY previews: parsed and re-exported as GLB for model-viewer.
    "three/examples/jsm/exporters/GLTFExporter.js",
    "three/examples/jsm/libs/fflate.module.js",
    "three/examples/jsm/loaders/MTLLoader.js",
    "three/examples/jsm/loaders/OBJLoader.js",
    "three/examples/jsm/loaders/PLYLoader.js",
    # Spark inlines its sorting worker and WebAssembly, so this one file is all it needs.
    "@sparkjsdev/spark/dist/spark.module.min.js",
    "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui.css",
    "swagger-ui-dist/favicon-32x32.png",
)
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
IMMUTABLE = "public, max-age=31536000, immutable"
# Spark compiles WebAssembly ('wasm-unsafe-eval') and starts its sorting worker from a blob: URL;
# results are shown from blob: URLs. Everything else comes from this origin only.
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' {import_map_hash}; "
    "worker-src 'self' blob:; img-src 'self' blob: data:; connect-src 'self' blob: data:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class WebAssetsMissing(RuntimeError):
    """``node_modules`` is missing or holds other versions than ``package.json`` pins."""


def installed_version_problems(root: Path = ROOT) -> list[str]:
    """Compare each pinned npm dependency with the version installed under ``node_modules``.

    Returns:
        One line per missing or mismatched package; empty when everything matches.
    """
    pins = json.loads((root / "package.json").read_text())["dependencies"]
    problems = []
    for package, pinned in pins.items():
        manifest = root / "node_modules" / package / "package.json"
        if not manifest.is_file():
            problems.append(f"{package} {pinned} is not installed")
            continue
        installed = json.loads(manifest.read_text())["version"]
        if installed != pinned:
            problems.append(f"{package} is {installed}, package.json pins {pinned}")
    return problems


def allowlist(root: Path = ROOT) -> dict[str, Path]:
    """Map each servable name (relative to ``/static/<fingerprint>/``) to its file.

    Raises:
        WebAssetsMissing: a pinned npm package is absent or another version, or a file is missing;
            the message names them and the command that installs them.
    """
    files = {name: root / "web" / name for name in WEB_FILES}
    files |= {f"vendor/{path}": root / "node_modules" / path for path in VENDOR_FILES}
    problems = installed_version_problems(root) if (root / "node_modules").is_dir() else ["node_modules/ is missing"]
    problems += [f"{path.relative_to(root)} is missing" for path in files.values() if not path.is_file()]
    if problems:
        raise WebAssetsMissing(
            "the web studio's files are incomplete: " + "; ".join(problems) + f". Run `{NPM_INSTALL}` in {root}."
        )
    return files


def read_files(files: dict[str, Path]) -> dict[str, bytes]:
    """Each allowlisted name's bytes."""
    return {name: path.read_bytes() for name, path in files.items()}


def fingerprint(files: dict[str, bytes]) -> str:
    """Hash of every served name and its bytes: 12 hex digits that change whenever any file does."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
    return digest.hexdigest()[:12]


FILES = allowlist()
# Read once, here: the bytes served are exactly the bytes the fingerprint covers.
FILE_BYTES = read_files(FILES)
STATIC_BASE = f"/static/{fingerprint(FILE_BYTES)}"


def static_url(name: str) -> str:
    """The cacheable URL of an allowlisted name, e.g. ``vendor/swagger-ui-dist/swagger-ui.css``."""
    if name not in FILES:
        raise KeyError(f"{name!r} is not an allowlisted static file")
    return f"{STATIC_BASE}/{name}"


@functools.cache
def file_bytes(name: str) -> tuple[bytes, bytes]:
    """An allowlisted file's bytes, plain and gzipped (compressed once per process, on first request)."""
    data = FILE_BYTES[name]
    return data, gzip.compress(data, compresslevel=6, mtime=0)


def import_map() -> str:
    """The page's import map: bare module names to their allowlisted, fingerprinted URLs."""
    imports = {
        "three": static_url("vendor/three/build/three.module.min.js"),
        # Only the allowlisted addons resolve; any other addon answers 404.
        "three/addons/": f"{STATIC_BASE}/vendor/three/examples/jsm/",
        "@google/model-viewer": static_url("vendor/@google/model-viewer/dist/model-viewer-module.min.js"),
        "@sparkjsdev/spark": static_url("vendor/@sparkjsdev/spark/dist/spark.module.min.js"),
    }
    return json.dumps({"imports": imports}, indent=2)


@functools.cache
def studio_page() -> tuple[str, str]:
    """The studio HTML with its import map and static base filled in, and its CSP.

    Returns:
        (html, Content-Security-Policy value that allows exactly this inline import map).
    """
    script = import_map()
    html = (WEB_DIR / "studio.html").read_text()
    html = html.replace("{{import_map}}", script).replace("{{static}}", STATIC_BASE)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return html, PAGE_CSP.format(import_map_hash=f"'sha256-{digest}'")


def not_found(path: str) -> JSONResponse:
    """The API's error shape for a name outside the allowlist (or an old fingerprint)."""
    return error_response(ErrorReply(404, f"no static file {path!r}", "path"))


router = APIRouter()


@router.get("/", include_in_schema=False)
@router.get("/studio", include_in_schema=False)
async def studio() -> HTMLResponse:
    """The studio page; revalidated on each load so that it always names the current fingerprint."""
    html, csp = studio_page()
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": csp})


@router.get("/static/{path:path}", include_in_schema=False)
async def static(path: str, request: Request) -> Response:
    """An allowlisted file, gzipped when the client accepts it; any other path answers 404.

    Lookup is by exact name in the allowlist, never by joining ``path`` onto a directory, so
    ``..`` or an encoded slash can reach nothing else.
    """
    base, _, name = path.partition("/")
    if f"/static/{base}" != STATIC_BASE or name not in FILES:
        return not_found(path)
    plain, compressed = file_bytes(name)
    headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding", "X-Content-Type-Options": "nosniff"}
    media_type = CONTENT_TYPES[FILES[name].suffix]
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        return Response(compressed, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(plain, media_type=media_type, headers=headers)


def swagger_ui_html(openapi_url: str = "/openapi.json", title: str = "gen3d API") -> HTMLResponse:
    """Swagger UI for ``/docs`` from the local swagger-ui-dist files (works offline).

    Args:
        openapi_url: where the page fetches the OpenAPI schema.
        title: the browser tab's title.
    """
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=static_url("vendor/swagger-ui-dist/swagger-ui-bundle.js"),
        swagger_css_url=static_url("vendor/swagger-ui-dist/swagger-ui.css"),
        swagger_favicon_url=static_url("vendor/swagger-ui-dist/favicon-32x32.png"),
        # Swagger UI would otherwise send the schema to validator.swagger.io for a badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
