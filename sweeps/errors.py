"""The project's own exceptions, each told in one `sweeps:` line, and how a library's exception is told in one."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of the error's message, or its type's name where it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class SweepError(Exception):
    """Bad input for a sweep: the message is one line that names the problem and the fix."""


class Interrupted(Exception):
    """A command stopped by a signal (Ctrl-C, SIGTERM, SIGHUP): the message says what is saved and how to go on.
    `signal`: the signal that stopped it (None: SIGINT)."""

    def __init__(self, message: str, signal: int | None = None):
        super().__init__(message)
        self.signal = signal


class SweepInterrupted(Interrupted):
    """The sweep was stopped with trials unfinished; its state and tables are saved: resume it."""

    def __init__(self, sweep_dir: str, signal: int | None = None):
        super().__init__(f"interrupted: continue with sweeps resume {sweep_dir}", signal)
        self.sweep_dir = sweep_dir


class TrialsFailed(Exception):
    """Every trial of the sweep errored: the message says why, each reason once with its count (the tables and
    the report are written)."""
