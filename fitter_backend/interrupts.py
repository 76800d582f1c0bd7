"""Ctrl-C and SIGTERM for the CLI and the server: both raise KeyboardInterrupt in the main
thread, so a running job unwinds (removing its partial folder) and earlier results stay."""
from __future__ import annotations

import signal


def interrupt_on_signals() -> None:
    """Raise KeyboardInterrupt on SIGINT and SIGTERM. SIGINT is set too, not left to Python:
    Python keeps it ignored when the parent ignored it (a shell's background job), and an
    interrupted job then ran to its end."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
