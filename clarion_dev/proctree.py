"""A process tree remembered while it runs, so all of it can be stopped by a deadline.

`make run` stops its processes through honcho, which sends SIGTERM to each
Procfile entry's process group and escalates to SIGKILL only after one entry
has exited, and only while honcho itself lives. Whatever that misses (a process
stuck on SIGTERM while honcho waits for it, children left behind when their
parent died and were reparented to init) must still end: this module remembers
every descendant it has seen and SIGKILLs those still alive at the deadline.
"""

from __future__ import annotations

import contextlib
import time

import psutil


def _alive(process: psutil.Process) -> bool:
    try:
        # is_running() also compares the start time, so a reused pid is not "alive".
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ProcessTree:
    """A root process and every descendant seen in it since (see remember())."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.seen: dict[tuple[int, float], psutil.Process] = {}

    def remember(self) -> None:
        """Add the root's current descendants; those already gone stay remembered."""
        with contextlib.suppress(psutil.Error):
            for child in self.root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.seen.setdefault((child.pid, child.create_time()), child)

    def alive(self) -> list[psutil.Process]:
        return [process for process in (self.root, *self.seen.values()) if _alive(process)]

    def stop_by(self, deadline: float, poll: float = 0.05) -> list[int]:
        """Wait until the whole tree is gone or `deadline` (time.monotonic()) passes,
        then SIGKILL what is left. Returns the pids that had to be killed."""
        while time.monotonic() < deadline:
            self.remember()
            if not self.alive():
                return []
            time.sleep(poll)
        self.remember()
        left = self.alive()
        for process in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        gone_by = time.monotonic() + 2.0  # SIGKILL cannot be refused; this is the kernel's tidy-up
        while any(_alive(process) for process in left) and time.monotonic() < gone_by:
            time.sleep(0.01)
        return [process.pid for process in left]
