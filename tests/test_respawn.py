"""clarion_dev.respawn: a dead process comes back; a stop signal ends it for good."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from tests.helpers import wait_for

SCRIPT = (
    "import pathlib, sys; p = pathlib.Path(sys.argv[1]); n = int(p.read_text() or 0) + 1;"
    " p.write_text(str(n)); sys.exit(0 if n >= 2 else 3)"
)


def test_a_command_that_dies_is_started_again_until_it_ends_cleanly(tmp_path):
    counter = tmp_path / "runs"
    counter.write_text("0")
    result = subprocess.run(
        [sys.executable, "-m", "clarion_dev.respawn", sys.executable, "-c", SCRIPT, str(counter)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, counter.read_text()) == (0, "2")
    assert "exited with code 3; starting it again" in result.stderr


def test_sigterm_stops_the_command_and_the_loop(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "clarion_dev.respawn", "sleep", "30"])
    wait_for(
        lambda: psutil.Process(process.pid).children(), timeout=10, what="the command to start"
    )
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) != 0
    assert time.monotonic() - started < 5
