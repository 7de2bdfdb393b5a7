"""The web studio page and offline API docs: an allowlist of static files, nothing from a CDN.

``router`` serves ``GET /`` and ``GET /studio`` (the page) and ``GET /static/<fingerprint>/<name>``
for an explicit allowlist: our ``web/`` files and the few npm files the page and Swagger UI load,
vendored in ``web/vendor/`` (``scripts/vendor_web.py`` refreshes them from package-lock.json). The
fingerprint hashes every allowlisted file, so a new build gets new URLs and the files can be
cached for a year; the page itself is revalidated on every load. The page and its files carry no
secret, so they stay open when the service has an API key: the page asks for the key itself.

The API never depends on these files: when any is missing the service still starts and serves
every API route, and ``/``, ``/studio`` and ``/docs`` answer 503 with ``STUDIO_PROBLEM``, which
names the fix (the ingress logs it once at start).
"""

import base64
import functools
import gzip
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from deployments.errors import ErrorReply, error_response
from gen3d.resources import data_path

logger = logging.getLogger(__name__)

WEB_DIR = data_path("web")
#: Where the vendored npm files live under ``WEB_DIR``, each at its path inside ``node_modules/``.
VENDOR = "vendor"
PAGE = "studio.html"
REFRESH_COMMAND = "python -m scripts.vendor_web"

# Our files, served as /static/<fingerprint>/<name>.
WEB_FILES = (
    "studio.css", "results.css", "studio.js", "api.js", "form.js", "job_view.js", "gallery.js", "mesh_viewer.js",
    "mesh_files.js", "splat_viewer.js",
)
# Vendored npm files, served as /static/<fingerprint>/vendor/<path>. Paths keep their node_modules
# layout, so three's relative import (./three.core.min.js) and the page's import map resolve inside the list.
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


def allowlist(web_dir: Path = WEB_DIR) -> dict[str, Path]:
    """Map each servable name (relative to ``/static/<fingerprint>/``) to its file under ``web_dir``."""
    files = {name: web_dir / name for name in WEB_FILES}
    return files | {f"{VENDOR}/{path}": web_dir / VENDOR / path for path in VENDOR_FILES}


def incomplete(web_dir: Path, files: dict[str, Path]) -> str | None:
    """Why the studio cannot be served from ``web_dir``, naming the fix; None when every file is there."""
    missing = [name for name, path in {PAGE: web_dir / PAGE, **files}.items() if not path.is_file()]
    if not missing:
        return None
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (
        f"the studio's files are incomplete in {web_dir} ({shown} missing), so the studio page and /docs are "
        f"off; every API route works. In a checkout `{REFRESH_COMMAND}` restores web/{VENDOR}/ (it needs npm); "
        "an installed gen3d needs reinstalling from a complete wheel."
    )


def read_files(files: dict[str, Path]) -> dict[str, bytes]:
    """Each allowlisted name's bytes."""
    return {name: path.read_bytes() for name, path in files.items()}


def fingerprint(files: dict[str, bytes]) -> str:
    """Hash of every served name and its bytes: 12 hex digits that change whenever any file does."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class StaticFiles:
    """The studio's files as served.

    Attributes:
        paths: each allowlisted name's file (its suffix gives the media type).
        data: each name's bytes, read once: the bytes served are exactly those the fingerprint
            covers. Empty when ``problem`` is set.
        base: ``/static/<fingerprint>``.
        problem: why the studio is off (a missing file and the fix), or None.
    """

    paths: dict[str, Path]
    data: dict[str, bytes]
    base: str
    problem: str | None


def load_static_files(web_dir: Path = WEB_DIR) -> StaticFiles:
    """Read the allowlist under ``web_dir``; a missing file turns the studio off, never the service."""
    paths = allowlist(web_dir)
    problem = incomplete(web_dir, paths)
    data = {} if problem else read_files(paths)
    return StaticFiles(paths, data, f"/static/{fingerprint(data)}", problem)


STATIC = load_static_files()
#: Why the studio is off (logged once by each ingress replica at start), or None.
STUDIO_PROBLEM = STATIC.problem


def studio_off() -> JSONResponse:
    """The API's error shape for the studio's routes while its files are incomplete: the fix, named."""
    return error_response(ErrorReply(503, str(STATIC.problem), "studio"))


def static_url(name: str) -> str:
    """The cacheable URL of an allowlisted name, e.g. ``vendor/swagger-ui-dist/swagger-ui.css``."""
    if name not in STATIC.data:
        raise KeyError(f"{name!r} is not an allowlisted static file")
    return f"{STATIC.base}/{name}"


@functools.cache
def file_bytes(name: str) -> tuple[bytes, bytes]:
    """An allowlisted file's bytes, plain and gzipped (compressed once per process, on first request)."""
    data = STATIC.data[name]
    return data, gzip.compress(data, compresslevel=6, mtime=0)


def import_map() -> str:
    """The page's import map: bare module names to their allowlisted, fingerprinted URLs."""
    imports = {
        "three": static_url("vendor/three/build/three.module.min.js"),
        # Only the allowlisted addons resolve; any other addon answers 404.
        "three/addons/": f"{STATIC.base}/{VENDOR}/three/examples/jsm/",
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
    html = (WEB_DIR / PAGE).read_text()
    html = html.replace("{{import_map}}", script).replace("{{static}}", STATIC.base)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return html, PAGE_CSP.format(import_map_hash=f"'sha256-{digest}'")


def not_found(path: str) -> JSONResponse:
    """The API's error shape for a name outside the allowlist (or an old fingerprint)."""
    return error_response(ErrorReply(404, f"no static file {path!r}", "path"))


router = APIRouter()


@router.get("/", include_in_schema=False)
@router.get("/studio", include_in_schema=False)
async def studio() -> Response:
    """The studio page; revalidated on each load so that it always names the current fingerprint."""
    if STATIC.problem:
        return studio_off()
    html, csp = studio_page()
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": csp})


@router.get("/static/{path:path}", include_in_schema=False)
async def static(path: str, request: Request) -> Response:
    """An allowlisted file, gzipped when the client accepts it; any other path answers 404.

    Lookup is by exact name in the allowlist, never by joining ``path`` onto a directory, so
    ``..`` or an encoded slash can reach nothing else.
    """
    base, _, name = path.partition("/")
    if f"/static/{base}" != STATIC.base or name not in STATIC.data:
        return not_found(path)
    plain, compressed = file_bytes(name)
    headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding", "X-Content-Type-Options": "nosniff"}
    media_type = CONTENT_TYPES[STATIC.paths[name].suffix]
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        return Response(compressed, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(plain, media_type=media_type, headers=headers)


def swagger_ui_html(openapi_url: str = "/openapi.json", title: str = "gen3d API") -> Response:
    """Swagger UI for ``/docs`` from the local swagger-ui-dist files (works offline).

    Args:
        openapi_url: where the page fetches the OpenAPI schema.
        title: the browser tab's title.

    Returns:
        The page, or the studio's 503 while its files are incomplete.
    """
    if STATIC.problem:
        return studio_off()
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=static_url("vendor/swagger-ui-dist/swagger-ui-bundle.js"),
        swagger_css_url=static_url("vendor/swagger-ui-dist/swagger-ui.css"),
        swagger_favicon_url=static_url("vendor/swagger-ui-dist/favicon-32x32.png"),
        # Swagger UI would otherwise send the schema to validator.swagger.io for a badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
