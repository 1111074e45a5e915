"""Ctrl-C that always ends a command: the first SIGINT raises KeyboardInterrupt as usual, so the
command unwinds and says how to continue; if the process is still alive ``grace`` seconds later (a
library waiting on a socket, a lock or a background thread while it unwinds), it prints the same
line and exits with 130 at once. What a repair run had finished is in its checkpoint already, so
leaving then loses only the step in flight, as a kill would.

The watcher hears the signal through ``signal.set_wakeup_fd``: Python's C-level handler writes the
signal's number to a pipe the moment it arrives, even while the main thread is stuck in C code and
cannot run a Python handler."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable

GRACE_S = 5.0


def exit_soon_after_ctrl_c(message: Callable[[], str], grace: float = GRACE_S, code: int = 130) -> bool:
    """Arm the watcher for this process (main thread only). ``message()`` gives the line printed when
    the grace runs out. Returns False where it cannot be armed (not the main thread, no pipes)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (OSError, ValueError):
        return False

    def watch() -> None:
        while True:
            try:
                data = os.read(read_end, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGINT in data:
                break
        time.sleep(grace)
        try:
            sys.stderr.write(message() + "\n")
            sys.stderr.flush()
        finally:
            os._exit(code)

    threading.Thread(target=watch, name="fixloop-ctrl-c", daemon=True).start()
    return True
