"""The test harness's own helpers that a failure message depends on."""

import subprocess
import sys

from tests.conftest import python_stacks


def test_python_stacks_names_where_a_process_waits() -> None:
    code = "import sys, time\ndef waiting_for_shutdown():\n    print('up', flush=True)\n    time.sleep(60)\nwaiting_for_shutdown()"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "up\n"
        assert "waiting_for_shutdown" in python_stacks(process.pid)
    finally:
        process.kill()
        process.wait()
    assert python_stacks(process.pid).startswith("(no stacks:")  # gone: says so instead of raising
