"""What `make run` shows: a quiet log while idle, each sent message in a frame,
and only URLs that answer.

- clarion_dev.quiet_logs turns the routine lines of the periodic sweeps (Beat's
  "Sending due task", a sweep's "received"/"succeeded") into DEBUG records and
  leaves every other line alone (unit tests on real loggers);
- the real `python -m clarion_dev.run` (honcho, uvicorn, two workers, Beat) on
  its own database and Redis: idle it writes next to nothing while the sweeps
  keep running, every URL its banner prints answers, and the example event the
  banner prints shows each email as a framed block (slow: one start, ~15 s).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery.app.trace import LOG_FAILURE, LOG_RECEIVED, LOG_SUCCESS

from clarion_dev.quiet_logs import BEAT_SENDING, RoutineSweepLines, periodic_task_names
from clarion_dev.run import DEV_CELERY_APP, banner, dev_command, places
from delivery.console import message_block
from delivery.providers import Message
from tests.helpers import wait_for
from tests.test_make_run_stops import MakeRun, make_run_up
from tests.workers import database_url_for

ROOT = Path(__file__).resolve().parent.parent
SWEEP = "clarion.delivery.dispatch_due"  # run by Beat every 2 s
SEND = "clarion.delivery.send"  # not periodic: one per batch of messages


# --- the log filter, on real loggers ---------------------------------------------------


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def logged(
    logger_name: str, level: int, msg: str, *args, logger_level: int = logging.INFO
) -> list[tuple[str, str]]:
    """(level name, message) of what reaches a handler when `logger_name` logs this
    with the dev filter installed (restored afterwards)."""
    logger = logging.getLogger(logger_name)
    line_filter = RoutineSweepLines(periodic=lambda: frozenset({SWEEP}))
    kept = _Kept()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addFilter(line_filter)
    logger.addHandler(kept)
    logger.setLevel(logger_level)
    logger.propagate = False
    try:
        logger.log(level, msg, *args)
    finally:
        logger.removeFilter(line_filter)
        logger.removeHandler(kept)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    return [(record.levelname, record.getMessage()) for record in kept.records]


def task_context(name: str) -> dict:
    return {"id": "1", "name": name, "return_value": "0", "runtime": 0.01, "args": "", "kwargs": ""}


def test_beats_sending_due_task_line_is_dropped_at_info():
    assert logged("celery.beat", logging.INFO, BEAT_SENDING, "clarion: relay", "x") == []


def test_beats_start_line_stays_at_info():
    assert logged("celery.beat", logging.INFO, "beat: Starting...") == [
        ("INFO", "beat: Starting...")
    ]


@pytest.mark.parametrize(
    ("logger_name", "msg"),
    [("celery.worker.strategy", LOG_RECEIVED), ("celery.app.trace", LOG_SUCCESS)],
    ids=["received", "succeeded"],
)
def test_a_periodic_sweeps_routine_line_is_dropped_at_info(logger_name, msg):
    assert logged(logger_name, logging.INFO, msg, task_context(SWEEP)) == []


@pytest.mark.parametrize(
    ("logger_name", "msg"),
    [("celery.worker.strategy", LOG_RECEIVED), ("celery.app.trace", LOG_SUCCESS)],
    ids=["received", "succeeded"],
)
def test_the_same_line_of_a_task_beat_does_not_run_stays_at_info(logger_name, msg):
    [(level, text)] = logged(logger_name, logging.INFO, msg, task_context(SEND))
    assert level == "INFO" and SEND in text


def test_a_periodic_sweeps_failure_stays_an_error():
    context = {**task_context(SWEEP), "description": "raised unexpected", "exc": "boom"}
    [(level, text)] = logged("celery.app.trace", logging.ERROR, LOG_FAILURE, context)
    assert level == "ERROR" and "boom" in text


def test_the_routine_lines_show_as_debug_records_when_the_logger_is_at_debug():
    shown = logged(
        "celery.app.trace",
        logging.INFO,
        LOG_SUCCESS,
        task_context(SWEEP),
        logger_level=logging.DEBUG,
    ) + logged("celery.beat", logging.INFO, BEAT_SENDING, "a", "b", logger_level=logging.DEBUG)
    assert [level for level, _ in shown] == ["DEBUG", "DEBUG"]


def test_the_periodic_tasks_are_the_beat_schedules_tasks():
    from notifications.schedules import schedules

    assert periodic_task_names() == {schedule.task for schedule in schedules()}
    assert SWEEP in periodic_task_names() and SEND not in periodic_task_names()


def test_make_runs_workers_and_beat_run_on_the_dev_celery_app_under_respawn():
    commands = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    celery = {name: command for name, command in commands.items() if "celery" in command}
    assert set(celery) == {"worker_urgent", "worker_bulk", "beat"}
    for command in celery.values():
        dev = dev_command(command.strip())
        assert dev.startswith("python -m clarion_dev.respawn celery ")
        assert f"-A {DEV_CELERY_APP} " in dev and "-A config " not in dev
        assert "${" in dev or "beat" in dev  # honcho's shell still expands the variables


def filters_of_the_dev_app(quiet_logs: str | None) -> str:
    """The filters on Beat's logger once clarion_dev.celery_app is imported, in a
    fresh interpreter with CLARION_DEV_QUIET_LOGS as given."""
    env = {k: v for k, v in os.environ.items() if k != "CLARION_DEV_QUIET_LOGS"}
    if quiet_logs is not None:
        env["CLARION_DEV_QUIET_LOGS"] = quiet_logs
    code = (
        "import logging, clarion_dev.celery_app;"
        " print([type(f).__name__ for f in logging.getLogger('celery.beat').filters])"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_dev_app_quiets_the_routine_lines_unless_told_not_to():
    assert filters_of_the_dev_app(None) == "['RoutineSweepLines']"
    assert filters_of_the_dev_app("0") == "[]"
    assert filters_of_the_dev_app("false") == "[]"


def test_the_banner_prints_every_place_and_the_demo_only_with_debug_on():
    with_demo = banner("http://h:1", debug=True, key="k", key_source="s")
    without = banner("http://h:1", debug=False, key="k", key_source="s")

    for _, url, _ in places("http://h:1", debug=True):
        assert url in with_demo
    assert "http://h:1/demo/" not in without and "DEBUG is off" in without


# --- the framed console message --------------------------------------------------------


def test_a_console_message_is_a_framed_block_with_channel_to_subject_and_body():
    block = message_block(
        Message(7, "email", "lu@example.com", {"subject": "Hi lu", "text": "a <b>", "html": "<p>"})
    )

    assert block.splitlines() == [
        "email to lu@example.com (delivery 7), written here instead of sent",
        "┌" + "─" * 74,
        "│ channel  email",
        "│ to       lu@example.com",
        "│ subject  Hi lu",
        "│",
        "│ a <b>",
        "│",
        "│ html     <p>",
        "└" + "─" * 74,
    ]


def test_a_console_message_shows_a_terminal_escape_as_text():
    block = message_block(Message(7, "sms", "+1555", {"text": "hi \x1b[2J\rthere"}))

    assert "\x1b" not in block and "\r" not in block
    assert "hi \\x1b[2J\\x0dthere" in block


def test_a_push_console_message_counts_its_devices_and_wraps_a_long_body():
    block = message_block(
        Message(8, "push", "", {"title": "T", "body": "word " * 40}, targets=("a", "b"))
    )

    assert "│ to       2 devices" in block
    assert max(len(line) for line in block.splitlines()) <= 76


# --- the real make run ----------------------------------------------------------------

IDLE_SECONDS = 20.0
# Before: ~100 lines in 20 s (Beat's and the workers' three lines per sweep run).
IDLE_LINES_LIMIT = 3
BANNER_URL = re.compile(r"^  (\w[\w ]*?)\s{2,}(http://\S+)", re.MULTILINE)


@pytest.fixture(scope="module")
def dev_run(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[MakeRun]:
    """`python -m clarion_dev.run` on a database and Redis of its own, up, for this module."""
    from django.db import connection

    with make_run_up(
        database_url_for(connection.settings_dict),
        f"{connection.settings_dict['NAME']}_dev_run",
        tmp_path_factory.mktemp("devdata"),
    ) as running:
        yield running


def demo_key(log: str) -> str:
    return re.search(r"^  Demo API key\s+(\S+)", log, re.MULTILINE).group(1)


def body_lines(log: str) -> list[str]:
    """The log without honcho's "08:05:19 worker_bulk.1   | " prefix."""
    return [line.split(" | ", 1)[-1] for line in log.splitlines()]


def settled_log(running: MakeRun, quiet_for: float = 2.0) -> str:
    """The log once the start-up lines have ended: unchanged for `quiet_for` seconds."""
    previous, unchanged_since = running.log(), time.monotonic()

    def settled() -> str | None:
        nonlocal previous, unchanged_since
        now = running.log()
        if now != previous:
            previous, unchanged_since = now, time.monotonic()
        return now if time.monotonic() - unchanged_since >= quiet_for else None

    return wait_for(settled, timeout=30, interval=0.2, what="the start-up output to end")


def routine_lines(log: str) -> list[str]:
    names = periodic_task_names()
    return [
        line
        for line in log.splitlines()
        if "Sending due task" in line
        or any(f"Task {name}[" in line for name in names)  # received / succeeded
    ]


@pytest.mark.slow
@pytest.mark.pipeline
def test_an_idle_make_run_writes_almost_nothing(dev_run):
    lines_before = len(settled_log(dev_run).splitlines())

    time.sleep(IDLE_SECONDS)  # the window measured, not a wait for something

    written = dev_run.log().splitlines()[lines_before:]
    print(f"make run, idle: {len(written)} lines in {IDLE_SECONDS:.0f} s")
    assert len(written) <= IDLE_LINES_LIMIT, "\n".join(written)
    assert routine_lines(dev_run.log()) == []


@pytest.mark.slow
@pytest.mark.pipeline
def test_every_url_make_run_prints_answers_200(dev_run):
    printed = dict(BANNER_URL.findall(dev_run.log()))

    expected = places(dev_run.base_url, debug=True)
    assert printed == {label: url for label, url, _ in expected}
    for label, url in printed.items():
        response = httpx.get(url, follow_redirects=True, timeout=10)
        assert response.status_code == 200, (label, url, response.status_code)


@pytest.mark.slow
@pytest.mark.pipeline
def test_the_printed_example_event_shows_each_email_as_a_framed_block(dev_run):
    """The emails go out through the dispatch sweep Beat runs: quiet, it still runs."""
    log = dev_run.log()
    example = re.search(r"curl -s -X POST (\S+) .*?-d '(.*?)'", log, re.DOTALL)
    url, body = example.group(1), json.loads(example.group(2))

    response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {demo_key(log)}"})

    assert response.status_code == 202, response.text
    emails = {"alice@example.com", "bruno@example.com", "chen@example.com"}

    def framed_headers() -> tuple[list[str], list[int]] | None:
        lines = body_lines(dev_run.log())
        headers = [i for i, line in enumerate(lines) if "written here instead of sent" in line]
        return (lines, headers) if len(headers) >= len(emails) else None

    lines, headers = wait_for(framed_headers, timeout=30, interval=0.2, what="framed emails")
    seen = set()
    for i in headers:
        frame = lines[i + 1 : i + 8]
        to = frame[2].removeprefix("│ to       ")
        assert frame[0].startswith("┌──") and frame[1] == "│ channel  email", frame
        assert frame[3].startswith("│ subject  "), frame
        assert frame[5] == "│ dana: Nice!" and frame[6].startswith("└──"), frame
        seen.add(to)
    assert seen == emails
    # A sweep that did work says so.
    dispatched = re.findall(r"deliveries dispatched: (\d+)", dev_run.log())
    assert sum(map(int, dispatched)) == len(emails)
