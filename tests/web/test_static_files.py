"""``deployments/web.py`` without Ray or a browser: the page, the static allowlist and its checks."""

import base64
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from deployments import web


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
    assert f'href="{web.STATIC.base}/studio.css"' in page.text
    assert f'src="{web.STATIC.base}/studio.js"' in page.text
    assert "{{" not in page.text


def test_every_import_map_target_is_served(client: TestClient) -> None:
    targets = json.loads(web.import_map())["imports"]
    for name, url in targets.items():
        if name.endswith("/"):  # a prefix: the allowlisted files under it must resolve
            under = [n for n in web.STATIC.paths if web.static_url(n).startswith(url)]
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


@pytest.mark.parametrize("name", sorted(web.STATIC.paths))
def test_each_allowlisted_file_has_its_type_bytes_and_a_long_cache(client: TestClient, name: str) -> None:
    response = client.get(web.static_url(name), headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == web.STATIC.paths[name].read_bytes()
    expected_type = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}[web.STATIC.paths[name].suffix]
    assert response.headers["content-type"].startswith(expected_type)
    assert "max-age=31536000" in response.headers["cache-control"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_gzip_when_accepted(client: TestClient) -> None:
    url = web.static_url("vendor/three/build/three.module.min.js")
    # httpx would decode gzip itself; stream to see the bytes as sent.
    with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip" and response.headers["vary"] == "Accept-Encoding"
    assert len(raw) < web.STATIC.paths["vendor/three/build/three.module.min.js"].stat().st_size
    assert gzip.decompress(raw) == web.STATIC.paths["vendor/three/build/three.module.min.js"].read_bytes()


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
    response = client.get(path.format(base=web.STATIC.base.removeprefix("/static/")))
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
    """web/ (our files and the vendored npm files) in a scratch folder."""
    return Path(shutil.copytree(web.WEB_DIR, tmp_path / "web"))


def test_a_complete_copy_has_the_modules_fingerprint(tmp_path: Path) -> None:
    static = web.load_static_files(copy_of_the_web_root(tmp_path))
    assert static.problem is None and sorted(static.paths) == sorted(web.STATIC.paths)
    assert static.base == web.STATIC.base


def test_a_missing_file_turns_the_studio_off_and_names_the_fix(tmp_path: Path) -> None:
    root = copy_of_the_web_root(tmp_path)
    (root / "vendor" / "three" / "build" / "three.core.min.js").unlink()
    static = web.load_static_files(root)
    assert static.data == {} and static.problem is not None
    assert "vendor/three/build/three.core.min.js" in static.problem
    assert web.REFRESH_COMMAND in static.problem and "every API route works" in static.problem


def test_without_its_files_the_studio_answers_one_clear_503(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(web, "STATIC", web.load_static_files(tmp_path))
    app = FastAPI()
    app.include_router(web.router)
    client = TestClient(app)
    for route in ("/", "/studio"):
        response = client.get(route)
        assert response.status_code == 503
        assert response.json() == {"error": web.STATIC.problem, "field": "studio"}
    assert client.get("/static/anything/studio.js").status_code == 404
    docs = web.swagger_ui_html()
    assert docs.status_code == 503 and web.REFRESH_COMMAND in docs.body.decode()


def test_a_changed_file_changes_the_fingerprint(tmp_path: Path) -> None:
    root = copy_of_the_web_root(tmp_path)
    before = web.load_static_files(root).base
    with (root / "studio.css").open("a") as css:
        css.write("\n/* changed */\n")
    assert web.load_static_files(root).base != before
