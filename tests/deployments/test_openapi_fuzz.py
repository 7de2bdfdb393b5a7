"""Schemathesis against the tiny service: it does what its OpenAPI document says, key off and key on.

Every check, a fixed seed and a fixed example count (bounded and repeatable), every phase: the
schema's examples, the coverage of each boundary, fuzzing, and the stateful phase, which follows
the document's links (``POST /jobs`` -> ``GET /jobs/{id}``, its events and its files).

One check is excluded, with its reason: ``positive_data_acceptance`` is replaced by
``tests.deployments.fuzz_hooks.positive_data_accepted_unless_the_image_is_unreadable``. A schema
cannot say that base64 decodes to a picture of an object; the document says it in words, and the
service answers 422 naming the field. The replacement accepts exactly that and applies the
built-in check to every other answer.
"""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, ServedGraph
from tests.serve_admin import ServeAdmin, redeployed, with_service, with_user_config

pytestmark = pytest.mark.serve
SEED = 22
#: Per operation and phase; with the coverage phase's boundaries and the stateful scenarios this
#: makes about 900 cases per configuration, in about two minutes on two cores.
MAX_EXAMPLES = 20
MIN_CASES = 500
API_KEY = f"fuzz-{uuid.uuid4().hex}"
RUN_TIMEOUT_S = 600


def schemathesis(url: str, report: Path, headers: dict[str, str]) -> tuple[dict[str, Any], str]:
    """Run the Schemathesis CLI on ``url``'s document; its JSON report and its output."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--checks", "all",
        "--exclude-checks", "positive_data_acceptance",  # replaced: see the module docstring
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
        "--generation-database", "none", "--request-timeout", "120",
        "--report", "json", "--report-json-path", str(report), "--no-color",
    ]  # fmt: skip
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.deployments.fuzz_hooks", "PYTHONPATH": str(ROOT)}
    # Run beside the report: Hypothesis and Schemathesis leave caches in their working directory.
    done = subprocess.run(command, cwd=report.parent, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return json.loads(report.read_text()), done.stdout + done.stderr


def assert_kept(report: dict[str, Any], output: str, configuration: str) -> None:
    """0 failures and 0 errors over at least ``MIN_CASES`` cases, every phase run."""
    cases = report["test_cases"]
    print(f"schemathesis, {configuration}: {cases['generated']} cases, seed {report['seed']}, {report['running_time']:.0f} s")
    assert report["failures"] == [] and report["errors"] == [], output[-12000:]
    assert report["exit_code"] == 0 and cases["with_failures"] == 0 and cases["errored"] == 0, output[-12000:]
    assert cases["generated"] >= MIN_CASES
    assert {phase: state["status"] for phase, state in report["phases"].items()} == dict.fromkeys(
        ("examples", "coverage", "fuzzing", "stateful"), "success"
    )


@pytest.fixture
def fuzzed(served: ServedGraph, tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """Redeploys the running app with its jobs in a store of their own (the fuzzer makes a few
    hundred; the session's store keeps its bounds) and the given service settings."""
    admin = ServeAdmin.from_log(served.log)
    store = {"job_store": {"backend": "sqlite", "path": str(tmp_path / "jobs")}}

    def ready() -> bool:
        return httpx.get(f"{served.url}/health", timeout=10).status_code == 200

    def apply(service: dict[str, Any]) -> Any:
        return redeployed(admin, lambda config: with_user_config(with_service(config, **service), "SharedState", **store), ready)

    yield apply


def test_the_service_does_what_its_document_says_without_a_key(
    served: ServedGraph, fuzzed: Callable, tmp_path: Path
) -> None:
    with fuzzed({"api_key": None}):
        report, output = schemathesis(served.url, tmp_path / "report.json", {})
    assert_kept(report, output, "no API key")


def test_the_service_does_what_its_document_says_with_a_key(served: ServedGraph, fuzzed: Callable, tmp_path: Path) -> None:
    with fuzzed({"api_key": API_KEY}):
        document = httpx.get(f"{served.url}/openapi.json", timeout=30).json()
        assert "securitySchemes" in document["components"]
        report, output = schemathesis(served.url, tmp_path / "report.json", {"X-API-Key": API_KEY})
    assert_kept(report, output, "API key")
