"""The ``gen3d`` command against a small local fake of the HTTP API (no Ray, no models)."""

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from gen3d import client
from gen3d.service import cli
from tests.conftest import FIXTURES, ROOT


@dataclass
class Answer:
    """One scripted HTTP answer."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeService:
    """A local HTTP server that answers from a script and records what it was sent.

    Attributes:
        url: its base URL.
        answers: per path, the answers still to give (the last one repeats).
        received: (method, path, headers, JSON body or None) of every request.
    """

    url: str
    answers: dict[str, list[Answer]]
    received: list[tuple[str, str, dict[str, str], object]] = field(default_factory=list)

    def script(self, path: str, *answers: Answer) -> None:
        self.answers[path] = list(answers)

    def bodies(self, path: str = "/generate") -> list[dict]:
        return [body for _, where, _, body in self.received if where == path]


def glb_answer(payload: bytes = b"glTF-fake") -> Answer:
    timing = "text_to_image;dur=12.5, background;dur=3.0, image_to_3d;dur=20.0, export;dur=1.5, total;dur=37.0"
    return Answer(200, payload, {"content-type": "model/gltf-binary", "server-timing": timing})


@pytest.fixture
def service() -> Iterator[FakeService]:
    fake = FakeService("", {})

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            fake.received.append((self.command, self.path, dict(self.headers), json.loads(raw) if raw else None))
            queue = fake.answers.get(self.path) or [Answer(404, b'{"error": "not found"}')]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:  # keep pytest's output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def run(argv: list[str], waits: list[float] | None = None) -> int:
    """``gen3d ARGV`` in-process, recording sleeps instead of sleeping."""
    recorded = waits if waits is not None else []
    return cli.main(argv, sleep=recorded.append)


def test_generate_writes_the_file_and_prints_each_stage_timing(
    service: FakeService, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    service.script("/generate", glb_answer(b"glTF-bytes"))
    out = tmp_path / "chair.glb"
    code = run(["generate", "a red chair", "-o", str(out), "--url", service.url, "--seed", "7"])
    assert code == 0
    assert out.read_bytes() == b"glTF-bytes"
    assert service.bodies() == [{"format": "glb", "seed": 7, "prompt": "a red chair"}]
    printed = capsys.readouterr().out
    assert "wrote" in printed and str(out) in printed
    for stage, seconds in (("text_to_image", "0.013"), ("image_to_3d", "0.020"), ("total", "0.037")):
        assert any(line.split()[:2] == [stage, seconds] for line in printed.splitlines()), printed


def test_image_mesh_options_and_api_key_go_into_the_request(
    service: FakeService, tmp_path: Path
) -> None:
    service.script("/generate", glb_answer())
    argv = [
        "generate", "--image", str(FIXTURES / "chair.png"), "-o", str(tmp_path / "c.glb"), "--url", service.url,
        "--faces", "5000", "--texture", "uv", "--texture-size", "512", "--resolution", "128", "--no-normalize",
        "--api-key", "s3cret",
    ]
    assert run(argv) == 0
    (body,) = service.bodies()
    assert base64.b64decode(body.pop("image")) == (FIXTURES / "chair.png").read_bytes()
    assert body == {
        "format": "glb", "seed": 0, "texture": "uv", "faces": 5000, "texture_size": 512, "resolution": 128,
        "normalize": False,
    }
    (_, _, headers, _) = service.received[0]
    assert headers["X-API-Key"] == "s3cret"


def test_a_large_image_is_sent_whole(service: FakeService, tmp_path: Path) -> None:
    # The README's curl example breaks above ~100 KB (argument list too long); the CLI must not.
    image = tmp_path / "big.png"
    image.write_bytes(b"\x89PNG" + bytes(range(256)) * 4096)  # ~1 MB; the fake does not decode it
    service.script("/generate", glb_answer())
    assert run(["generate", "--image", str(image), "-o", str(tmp_path / "b.glb"), "--url", service.url]) == 0
    assert base64.b64decode(service.bodies()[0]["image"]) == image.read_bytes()


@pytest.mark.parametrize(
    ("name", "fmt", "texture", "expected"),
    [
        ("a.glb", None, None, ("glb", None)),
        ("a.obj", None, None, ("obj", "vertex")),  # one file: vertex colours
        ("a.zip", None, None, ("obj", "uv")),  # a textured OBJ travels as a zip
        ("a.PLY", "splat", None, ("splat", None)),
        ("a.ply", "ply", None, ("ply", None)),
        (None, "splat", None, ("splat", None)),
        (None, None, None, ("glb", None)),
    ],
)
def test_the_format_follows_the_extension_unless_given(
    name: str | None, fmt: str | None, texture: str | None, expected: tuple[str, str | None]
) -> None:
    choice = cli.choose_output(Path(name) if name else None, fmt, texture)
    assert (choice.format, choice.texture) == expected
    assert choice.note is None


def test_a_bare_ply_is_a_mesh_and_says_how_to_get_a_splat(
    service: FakeService, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    service.script("/generate", Answer(200, b"ply\n", {"content-type": "application/ply"}))
    assert run(["generate", "a mug", "-o", str(tmp_path / "mug.ply"), "--url", service.url]) == 0
    assert service.bodies()[0]["format"] == "ply"
    note = capsys.readouterr().err
    assert "ply" in note and "mesh" in note and "--format splat" in note


@pytest.mark.parametrize(
    ("name", "fmt", "texture"),
    [("a.stl", None, None), ("a.glb", "obj", None), ("a.obj", None, "uv"), ("a.glb", "nope", None), ("a.glb", None, "x")],
)
def test_contradictory_or_unknown_outputs_are_refused_before_sending(
    name: str, fmt: str | None, texture: str | None, service: FakeService,
    capsys: pytest.CaptureFixture,
) -> None:
    argv = ["generate", "x", "-o", name, "--url", service.url]
    argv += ["--format", fmt] if fmt else []
    argv += ["--texture", texture] if texture else []
    assert run(argv) == 2
    assert service.received == []
    assert capsys.readouterr().err.startswith("gen3d generate:")


def test_503_is_retried_after_its_retry_after(
    service: FakeService, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    busy = Answer(503, b'{"error": "the service is full"}', {"retry-after": "7", "content-type": "application/json"})
    service.script("/generate", busy, busy, glb_answer(b"at last"))
    waits: list[float] = []
    out = tmp_path / "a.glb"
    assert run(["generate", "a cube", "-o", str(out), "--url", service.url], waits) == 0
    assert waits == [7.0, 7.0]
    assert len(service.bodies()) == 3
    assert out.read_bytes() == b"at last"
    assert capsys.readouterr().err.count("503") == 2


def test_503_retries_are_bounded(
    service: FakeService, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    service.script("/generate", Answer(503, b'{"error": "the service is full"}', {"retry-after": "3600"}))
    waits: list[float] = []
    out = tmp_path / "a.glb"
    argv = ["generate", "a cube", "-o", str(out), "--url", service.url, "--retries", "2"]
    assert run(argv, waits) == 1
    assert waits == [client.MAX_RETRY_WAIT_S] * 2
    assert len(service.bodies()) == 3
    assert not out.exists()
    assert "error 503" in capsys.readouterr().err


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)
    assert client.retry_after_s("4", now) == 4.0
    assert client.retry_after_s(format_datetime(now + timedelta(seconds=9), usegmt=True), now) == 9.0
    assert client.retry_after_s(format_datetime(now - timedelta(seconds=9), usegmt=True), now) == 0.0
    assert client.retry_after_s(None, now) == client.retry_after_s("soon", now) == client.FALLBACK_RETRY_WAIT_S


def test_a_field_error_is_printed_with_its_field(
    service: FakeService, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    error = json.dumps({"error": "steps: expected one of [3, 4], got 9", "field": "steps"}).encode()
    service.script("/generate", Answer(422, error, {"content-type": "application/json"}))
    argv = ["generate", "a cube", "-o", str(tmp_path / "a.glb"), "--url", service.url, "--steps", "9"]
    assert run(argv) == 1
    assert "error 422 (field steps): steps: expected one of [3, 4], got 9" in capsys.readouterr().err


def test_no_service_says_how_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert run(["generate", "a cube", "-o", str(tmp_path / "a.glb"), "--url", url]) == 1
    assert "gen3d serve configs/serve_tiny.yaml" in capsys.readouterr().err


def test_health_waits_through_503_until_ready(
    service: FakeService, capsys: pytest.CaptureFixture
) -> None:
    starting = Answer(503, b'{"status": "starting"}', {"retry-after": "5"})
    service.script("/health", starting, Answer(200, b'{"status": "ok"}'))
    waits: list[float] = []
    assert run(["health", "--url", service.url, "--wait", "60"], waits) == 0
    assert waits == [5.0]
    assert '"ok"' in capsys.readouterr().out


def test_health_without_wait_reports_not_ready(
    service: FakeService, capsys: pytest.CaptureFixture
) -> None:
    service.script("/health", Answer(503, b'{"status": "starting"}', {"retry-after": "5"}))
    assert run(["health", "--url", service.url]) == 1
    assert "not ready (503)" in capsys.readouterr().err


def test_serve_runs_the_launcher_after_the_preflight(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.chdir(tmp_path)  # a relative config path is the user's, not the checkout's
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "mine.yaml"
    config.write_text((ROOT / "configs" / "serve_tiny.yaml").read_text())
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    args = cli.build_parser().parse_args(["serve", "configs/mine.yaml"])
    precompiled: list[Path] = []
    execute = lambda path, argv, env: calls.append((path, argv, env))  # noqa: E731
    assert cli.cmd_serve(args, execute=execute, precompile=lambda c: precompiled.append(c) or 0) == 0
    assert precompiled == []  # the tiny preset compiles nothing
    (path, argv, env), = calls
    assert argv[1:] == ["-m", "gen3d.service.launcher", str(config)]
    assert Path.cwd() == tmp_path  # Serve imports deployments.graph wherever gen3d is installed
    assert env["RAY_AUTH_MODE"] == "token"
    assert "RAY_AUTH_MODE=token" in capsys.readouterr().out


def launched_config(monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str]) -> tuple[int, Path | None]:
    """Run ``gen3d serve ARGV`` up to the launcher; its exit code and the config the launcher got."""
    monkeypatch.delenv("GEN3D_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    launched: list[Path] = []

    def execute(path: str, command: list[str], environ: dict[str, str]) -> None:
        launched.append(Path(command[-1]))

    code = cli.cmd_serve(cli.build_parser().parse_args(["serve", *argv]), execute=execute, precompile=lambda c: 0)
    return code, (launched[0] if launched else None)


def test_serve_finds_a_shipped_config_from_any_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("configs/serve_tiny.yaml", "serve_tiny.yaml", "serve_tiny"):
        assert launched_config(monkeypatch, [name], {}) == (0, ROOT / "configs" / "serve_tiny.yaml")


def test_serve_on_every_interface_needs_an_api_key_or_an_explicit_waiver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("gen3d.service.binding.PRIVATE_DIR", tmp_path / "private")
    argv = ["configs/serve_tiny.yaml", "--host", "0.0.0.0", "--port", "8100"]
    assert launched_config(monkeypatch, argv, {}) == (2, None)
    err = capsys.readouterr().err
    assert "0.0.0.0" in err and "GEN3D_API_KEY" in err and "--allow-no-api-key" in err
    code, private = launched_config(monkeypatch, argv, {"GEN3D_API_KEY": "s3cret"})
    assert code == 0 and private is not None and private.parent == tmp_path / "private"
    assert private.stat().st_mode & 0o777 == 0o600  # it holds the key
    written = yaml.safe_load(private.read_text())
    assert written["http_options"]["host"] == "0.0.0.0" and written["http_options"]["port"] == 8100
    ingress = next(d for d in written["applications"][0]["deployments"] if d["name"] == "Ingress")
    assert ingress["user_config"]["api_key"] == "s3cret"
    code, private = launched_config(monkeypatch, [*argv, "--allow-no-api-key"], {})
    assert code == 0 and yaml.safe_load(private.read_text())["http_options"]["host"] == "0.0.0.0"
    # On loopback no key is needed and the config runs as it is.
    assert launched_config(monkeypatch, ["configs/serve_tiny.yaml"], {}) == (0, ROOT / "configs" / "serve_tiny.yaml")


def test_serve_keeps_an_explicit_auth_mode() -> None:
    assert cli.ray_env({"RAY_AUTH_MODE": "disabled"})["RAY_AUTH_MODE"] == "disabled"


def test_serve_refuses_a_config_the_machine_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("gen3d.service.preflight.local_cuda_devices", lambda: (0, "this machine has 0 usable CUDA device(s)"))
    args = cli.build_parser().parse_args(["serve", str(ROOT / "serve_config.yaml")])
    assert cli.cmd_serve(args, execute=lambda *a: pytest.fail("the launcher must not start")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "configs/serve_tiny.yaml" in err and "CUDA" in err


def test_serve_precompiles_a_compiling_preset_first_and_stops_if_that_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "serve.yaml"
    tiny = yaml.safe_load((ROOT / "configs" / "serve_tiny.yaml").read_text())
    tiny["applications"][0]["args"]["overrides"] = {"text_to_image": {"compile": True}}
    config.write_text(yaml.safe_dump(tiny))
    args = cli.build_parser().parse_args(["serve", str(config)])
    calls: list[str] = []
    execute = lambda path, argv, env: calls.append("launcher")  # noqa: E731
    assert cli.cmd_serve(args, execute=execute, precompile=lambda c: calls.append("precompile") or 0) == 0
    assert calls == ["precompile", "launcher"]
    calls.clear()
    assert cli.cmd_serve(args, execute=execute, precompile=lambda c: calls.append("precompile") or 1) == 2
    assert calls == ["precompile"]
