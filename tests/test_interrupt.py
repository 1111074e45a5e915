"""Ctrl-C always ends a command (apps/interrupt.py): a real process, a real SIGINT, and a command
that does not unwind by itself."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.conftest import sigint_at_default

STUCK = """
import sys, time
from fixloop.apps.interrupt import exit_soon_after_ctrl_c
exit_soon_after_ctrl_c(lambda: "fixloop: interrupted; continue it with fixloop repair --resume RUN", grace=1.0)
print("armed", flush=True)
while True:  # a library that swallows KeyboardInterrupt and keeps waiting
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        continue
"""

POLITE = """
import time
from fixloop.apps.interrupt import exit_soon_after_ctrl_c
exit_soon_after_ctrl_c(lambda: "never printed", grace=30.0)
print("armed", flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("unwound", flush=True)
    raise SystemExit(130)
"""


def _start(code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=sigint_at_default)
    assert process.stdout.readline().strip() == "armed"
    return process


def test_a_command_stuck_after_ctrl_c_still_exits_with_130_and_the_resume_line():
    process = _start(STUCK)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "fixloop: interrupted; continue it with fixloop repair --resume RUN"
    assert time.monotonic() - sent >= 1.0  # it waited for the command to unwind first


def test_a_command_that_unwinds_ends_its_own_way():
    process = _start(POLITE)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 130 and stdout.strip() == "unwound" and "never printed" not in stderr
