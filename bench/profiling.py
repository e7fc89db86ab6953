"""Optional py-spy sampling of a running process (``--profile``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.common import say
from bench.procs import REGISTRY

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy_path() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def start_record(pid: int, seconds: int, out: Path, rate: int = 200, subprocesses: bool = False):
    """py-spy record in the background; returns the Managed process or None when unavailable."""
    exe = py_spy_path()
    if exe is None:
        say("py-spy not installed (pip install py-spy); no profile")
        return None
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        "--gil",
    ] + (["--subprocesses"] if subprocesses else [])
    return REGISTRY.start(
        "py-spy", argv, env={"PATH": "/usr/bin:/bin"}, log_path=out.with_suffix(".log")
    )


def finish_record(managed, timeout: float) -> None:
    if managed is None:
        return
    try:
        managed.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    REGISTRY.stop(managed, timeout=5)


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({file})"


def summarize(raw_path: Path, top: int = 25) -> dict:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    if not raw_path.exists():
        return {"error": f"no profile at {raw_path}"}
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    # Coarse buckets: which package the innermost application-level frame is in.
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        # py-spy raw lines start with the thread/process name: skip non-frames.
        frames = [f for f in frames if "(" in f]
        if not frames:
            continue
        total += n
        self_counts[frames[-1]] += n
        for name in set(frames):
            incl_counts[name] += n
    if not total:
        return {"error": "empty profile"}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * c / total, 1)) for name, c in counter.most_common(top)]

    return {"samples": total, "self_pct": share(self_counts), "inclusive_pct": share(incl_counts)}
