"""clarion_dev.proctree: what `make run` kills when a stop does not end everything by itself."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from clarion_dev.proctree import ProcessTree
from tests.helpers import wait_for

# A parent and a child that both ignore SIGTERM, as a wedged process would.
STUBBORN = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']); time.sleep(60)"
)
# A parent that starts a child and leaves it behind (reparented to init).
DESERTER = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(1)"
)


def test_a_tree_that_ignores_sigterm_is_killed_at_the_deadline():
    root = subprocess.Popen([sys.executable, "-c", STUBBORN])
    tree = ProcessTree(root.pid)
    wait_for(lambda: psutil.Process(root.pid).children(), timeout=10, what="the child")
    tree.remember()
    started = time.monotonic()
    killed = tree.stop_by(time.monotonic() + 0.5)
    root.wait(5)
    assert len(killed) == 2 and not tree.alive()
    assert time.monotonic() - started < 3


def test_a_child_left_behind_by_its_parent_is_still_stopped():
    root = subprocess.Popen([sys.executable, "-c", DESERTER])
    tree = ProcessTree(root.pid)
    child = wait_for(lambda: psutil.Process(root.pid).children(), timeout=10, what="the child")[0]
    tree.remember()
    root.wait(10)
    assert child.is_running()  # orphaned, no longer in the root's tree
    assert tree.stop_by(time.monotonic() + 0.2) == [child.pid]
    assert not tree.alive()


def test_a_tree_that_is_already_gone_needs_no_kill():
    root = subprocess.Popen([sys.executable, "-c", "pass"])
    tree = ProcessTree(root.pid)
    root.wait(10)
    assert tree.stop_by(time.monotonic() + 5) == []
