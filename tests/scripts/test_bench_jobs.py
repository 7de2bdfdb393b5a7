"""scripts/bench_jobs.py: its statistics and the overhead it reports from paired measurements."""

import pytest

from scripts.bench_jobs import parse_args, summary


def test_overhead_is_the_difference_of_the_medians_and_the_median_of_the_pairs() -> None:
    generated = [0.30, 0.32, 0.31, 0.50]
    jobs = [0.34, 0.37, 0.35, 0.40]
    report = summary(generated, jobs, [0.01] * 4)
    assert report["n"] == 4
    assert report["generate"]["p50_s"] == pytest.approx(0.315)
    assert report["job_to_done"]["p50_s"] == pytest.approx(0.36)
    assert report["overhead_p50_s"] == pytest.approx(0.045)
    assert report["overhead_pair_median_s"] == pytest.approx(0.04)  # pairs: +0.04, +0.05, +0.04, -0.10


def test_bad_counts_are_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse_args(["-n", "0"])
    assert "-n must be >= 1" in capsys.readouterr().err
