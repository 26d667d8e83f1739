"""Progress of long runs: kept for the runs API, logged at a steady interval,
and a bar (or plain lines) for `sync --once`."""

from __future__ import annotations

import io
import json
import logging

import structlog

from daemon.clock import ManualClock
from daemon.commands import ProgressPrinter
from daemon.logging import configure_logging
from daemon.progress import ProgressLog
from daemon.scheduler import RunProgress


def test_progress_is_logged_at_a_steady_interval_with_rate_and_eta() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        clock = ManualClock()
        run = RunProgress("r1", "startup")
        progress = ProgressLog(run, clock, interval=10)
        for done in range(0, 1001, 100):
            clock.advance(2)  # 100 objects every 2 s
            progress("apply", done, 1000)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (run.phase, run.done, run.total) == ("apply", 1000, 1000)
    assert len(events) == 2  # at 10 s and 20 s, not at every call
    first = events[0]
    assert first["event"] == "sync progress" and first["done"] == 400 and first["total"] == 1000
    assert first["per_second"] == 40.0 and first["eta_seconds"] == 15


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_sync_once_shows_a_bar_on_a_terminal_and_lines_otherwise() -> None:
    terminal = FakeTerminal(tty=True)
    ProgressPrinter(terminal, interval=0)("apply", 5, 10)
    assert terminal.getvalue().startswith("\rapply [###############...............] 5/10")
    pipe = FakeTerminal(tty=False)
    printer = ProgressPrinter(pipe, interval=0)
    printer("apply", 5, 10)
    printer("apply", 10, 10)
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("apply: 5/10 (") and "\r" not in pipe.getvalue()
