"""StageRuntime: one worker thread, errors counted, a device error wedges the health check."""

import asyncio
import threading
import time

import pytest
import torch

from deployments._runtime import StageRuntime
from gen3d.errors import InputError


def run(coro):
    return asyncio.run(coro)


def test_calls_run_off_the_event_loop_on_one_thread() -> None:
    runtime = StageRuntime("export", torch.device("cpu"))
    loop_thread = threading.get_ident()

    async def two_calls():
        return await asyncio.gather(runtime.call(threading.get_ident), runtime.call(threading.get_ident))

    (first, s1), (second, s2) = run(two_calls())
    assert first == second != loop_thread
    assert s1 >= 0 and s2 >= 0


def test_bad_input_leaves_the_replica_healthy() -> None:
    runtime = StageRuntime("background", torch.device("cpu"))

    def reject() -> None:
        raise InputError("image", "no foreground")

    with pytest.raises(InputError):
        run(runtime.call(reject))
    runtime.check_health()


def test_device_error_fails_the_health_check() -> None:
    runtime = StageRuntime("image_to_3d", torch.device("cpu"))

    def crash() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError):
        run(runtime.call(crash))
    with pytest.raises(RuntimeError, match="wedged"):
        runtime.check_health()


def test_ordinary_bug_does_not_restart_the_replica() -> None:
    runtime = StageRuntime("export", torch.device("cpu"))

    def bug() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        run(runtime.call(bug))
    runtime.check_health()


def test_reported_seconds_exclude_the_wait_behind_earlier_requests() -> None:
    runtime = StageRuntime("text_to_image", torch.device("cpu"))

    def work() -> None:
        time.sleep(0.2)

    async def two_calls():
        return await asyncio.gather(runtime.call(work), runtime.call(work))

    start = time.perf_counter()
    (_, first), (_, second) = run(two_calls())
    assert time.perf_counter() - start >= 0.4  # one worker: the calls ran in turn
    assert first < 0.3 and second < 0.3
