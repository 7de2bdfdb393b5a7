"""The known third-party start-up warnings are dropped, and nothing else is."""

import logging
import subprocess
import sys

import pytest

from gen3d.service.logs import KNOWN_WARNINGS, quiet_known_warnings
from tests.conftest import ROOT

# What a stage replica imports first: diffusers, transformers and torchao come with it.
IMPORT_A_STAGE = "import gen3d.stages.text_to_image"


def stderr_of(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    ).stderr


def test_each_known_warning_is_dropped_and_its_neighbours_kept(caplog: pytest.LogCaptureFixture) -> None:
    quiet_known_warnings()
    quiet_known_warnings()  # idempotent: still one filter per logger
    with caplog.at_level(logging.WARNING):
        for known in KNOWN_WARNINGS:
            noisy = logging.getLogger(known.logger)
            assert sum(type(f).__name__ == "_DropKnown" for f in noisy.filters) == 1
            noisy.warning("prefix %s suffix", known.fragment)
            noisy.warning("an unrelated warning from %s", known.logger)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [f"an unrelated warning from {known.logger}" for known in KNOWN_WARNINGS]


def test_a_stage_import_prints_none_of_them_once_quieted() -> None:
    noisy = stderr_of(IMPORT_A_STAGE)
    seen = [known.fragment for known in KNOWN_WARNINGS if known.fragment in noisy]
    assert seen, f"none of the known warnings appeared without the filter; is the list stale?\n{noisy}"
    quiet = stderr_of(f"from gen3d.service.logs import quiet_known_warnings; quiet_known_warnings(); {IMPORT_A_STAGE}")
    assert [fragment for fragment in seen if fragment in quiet] == [], quiet


def test_an_expected_error_becomes_one_info_line_and_other_errors_keep_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gen3d.errors import InputError
    from gen3d.service.job_store import UnknownJob
    from gen3d.service.logs import brief_expected_errors

    serve_like = logging.getLogger("tests.serve_like")
    brief_expected_errors(serve_like, (InputError, UnknownJob))
    brief_expected_errors(serve_like, (InputError, UnknownJob))  # idempotent
    assert len(serve_like.filters) == 1
    with caplog.at_level(logging.INFO, logger="tests.serve_like"):
        for error in (UnknownJob("4b1d"), InputError("image", "no visible object"), RuntimeError("a bug")):
            try:
                raise error
            except Exception:
                serve_like.exception("Request failed.")
    brief = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records[:2]]
    assert brief == [
        ("INFO", "Request failed. (expected) UnknownJob: 4b1d", None),
        ("INFO", "Request failed. (expected) InputError: image: no visible object", None),
    ]
    bug = caplog.records[2]
    assert bug.levelname == "ERROR" and bug.exc_info is not None and "Traceback" in caplog.text
