"""``deployments/web.py`` without Ray or a browser: the page, the static allowlist and its checks."""

import base64
import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from deployments import web

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(web.router)
    return TestClient(app)


@pytest.mark.parametrize("route", ["/", "/studio"])
def test_page_names_the_current_static_files_and_is_revalidated(client: TestClient, route: str) -> None:
    page = client.get(route)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert f'href="{web.STATIC_BASE}/studio.css"' in page.text
    assert f'src="{web.STATIC_BASE}/studio.js"' in page.text
    assert "{{" not in page.text


def test_every_import_map_target_is_served(client: TestClient) -> None:
    targets = json.loads(web.import_map())["imports"]
    for name, url in targets.items():
        if name.endswith("/"):  # a prefix: the allowlisted files under it must resolve
            under = [n for n in web.FILES if web.static_url(n).startswith(url)]
            assert under, f"no allowlisted file under {url}"
            continue
        assert client.get(url).status_code == 200, name


def test_csp_allows_exactly_the_inline_import_map(client: TestClient) -> None:
    page = client.get("/studio")
    script = web.import_map()
    assert f"<script type=\"importmap\">{script}</script>" in page.text
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = page.headers["content-security-policy"]
    assert f"'sha256-{digest}'" in policy
    assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]


@pytest.mark.parametrize("name", sorted(web.FILES))
def test_each_allowlisted_file_has_its_type_bytes_and_a_long_cache(client: TestClient, name: str) -> None:
    response = client.get(web.static_url(name), headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == web.FILES[name].read_bytes()
    expected_type = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}[web.FILES[name].suffix]
    assert response.headers["content-type"].startswith(expected_type)
    assert "max-age=31536000" in response.headers["cache-control"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_gzip_when_accepted(client: TestClient) -> None:
    url = web.static_url("vendor/three/build/three.module.min.js")
    # httpx would decode gzip itself; stream to see the bytes as sent.
    with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip" and response.headers["vary"] == "Accept-Encoding"
    assert len(raw) < web.FILES["vendor/three/build/three.module.min.js"].stat().st_size
    assert gzip.decompress(raw) == web.FILES["vendor/three/build/three.module.min.js"].read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/static/studio.js",  # no fingerprint
        "/static/000000000000/studio.js",  # an old or wrong fingerprint
        "/static/{base}/studio.html",  # our file, but not a static one
        "/static/{base}/vendor/three/package.json",  # in node_modules, not allowlisted
        "/static/{base}/vendor/three/build/three.cjs",
        "/static/{base}/../pyproject.toml",
        "/static/{base}/%2e%2e/%2e%2e/pyproject.toml",
        "/static/{base}/..%2fdeployments%2fweb.py",
        "/static/{base}/vendor/three/../../package.json",
        "/static/{base}//etc/passwd",
        "/static/{base}/",
    ],
)
def test_anything_else_is_a_json_404(client: TestClient, path: str) -> None:
    response = client.get(path.format(base=web.STATIC_BASE.removeprefix("/static/")))
    assert response.status_code == 404
    body = response.json()
    assert body["field"] == "path" and "no static file" in body["error"]


def test_swagger_ui_html_loads_only_local_files() -> None:
    html = web.swagger_ui_html("/openapi.json", "gen3d API").body.decode()
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert web.static_url(f"vendor/swagger-ui-dist/{name}") in html
    assert "http://" not in html and "https://" not in html
    assert '"validatorUrl": null' in html


def test_static_url_refuses_names_outside_the_allowlist() -> None:
    with pytest.raises(KeyError, match="not an allowlisted"):
        web.static_url("studio.html")


def copy_of_the_web_root(tmp_path: Path) -> Path:
    """package.json, web/ and the allowlisted node_modules files in a scratch root."""
    shutil.copy(ROOT / "package.json", tmp_path / "package.json")
    shutil.copytree(ROOT / "web", tmp_path / "web")
    pins = json.loads((ROOT / "package.json").read_text())["dependencies"]
    for package in pins:
        target = tmp_path / "node_modules" / package
        target.mkdir(parents=True)
        shutil.copy(ROOT / "node_modules" / package / "package.json", target / "package.json")
    for path in web.VENDOR_FILES:
        (tmp_path / "node_modules" / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "node_modules" / path, tmp_path / "node_modules" / path)
    return tmp_path


def test_allowlist_of_a_complete_root_matches_the_module(tmp_path: Path) -> None:
    files = web.allowlist(copy_of_the_web_root(tmp_path))
    assert sorted(files) == sorted(web.FILES)
    assert web.fingerprint(web.read_files(files)) == web.STATIC_BASE.removeprefix("/static/")


def test_missing_node_modules_names_the_install_command(tmp_path: Path) -> None:
    root = copy_of_the_web_root(tmp_path)
    shutil.rmtree(root / "node_modules")
    with pytest.raises(web.WebAssetsMissing, match="node_modules/ is missing") as caught:
        web.allowlist(root)
    assert "npm ci --ignore-scripts --no-audit --no-fund" in str(caught.value)


def test_another_installed_version_is_named(tmp_path: Path) -> None:
    root = copy_of_the_web_root(tmp_path)
    manifest = root / "node_modules" / "three" / "package.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": "0.1.0"}))
    pinned = json.loads((root / "package.json").read_text())["dependencies"]["three"]
    with pytest.raises(web.WebAssetsMissing, match=rf"three is 0\.1\.0, package\.json pins {re.escape(pinned)}"):
        web.allowlist(root)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    root = copy_of_the_web_root(tmp_path)
    (root / "node_modules" / "three" / "build" / "three.core.min.js").unlink()
    with pytest.raises(web.WebAssetsMissing, match=r"three\.core\.min\.js is missing"):
        web.allowlist(root)


def test_a_changed_file_changes_the_fingerprint(tmp_path: Path) -> None:
    root = copy_of_the_web_root(tmp_path)
    before = web.fingerprint(web.read_files(web.allowlist(root)))
    with (root / "web" / "studio.css").open("a") as css:
        css.write("\n/* changed */\n")
    assert web.fingerprint(web.read_files(web.allowlist(root))) != before
