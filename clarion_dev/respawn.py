"""Run a command and start it again whenever it dies, until told to stop.

`make run` wraps the Celery workers and Beat in it: what Compose's
`restart: unless-stopped` does in production. (A Celery worker can exit with
"Unrecoverable error" when Redis goes away mid-acknowledgement; nothing is
lost, the messages are redelivered, but the worker must come back.)
SIGINT/SIGTERM are passed to the command and end the loop.

    python -m clarion_dev.respawn celery -A config worker ...
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

MAX_DELAY_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0  # a run this long resets the back-off


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m clarion_dev.respawn COMMAND [ARG ...]", file=sys.stderr)
        return 2
    state = {"stopping": False, "child": None}

    def forward(signum, frame) -> None:
        state["stopping"] = True
        child = state["child"]
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    delay = 1.0
    while True:
        started = time.monotonic()
        state["child"] = subprocess.Popen(argv)
        code = state["child"].wait()
        if state["stopping"] or code == 0:
            return code
        if time.monotonic() - started > HEALTHY_AFTER_SECONDS:
            delay = 1.0
        print(
            f"respawn: {argv[0]} exited with code {code}; starting it again in {delay:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not state["stopping"]:
            time.sleep(0.1)
        if state["stopping"]:
            return code
        delay = min(delay * 2, MAX_DELAY_SECONDS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
