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
