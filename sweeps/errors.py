"""The project's own exceptions, each told in one `sweeps:` line, and how a library's exception is told in one."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of the error's message, or its type's name where it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class SweepError(Exception):
    """Bad input for a sweep: the message is one line that names the problem and the fix."""


class SweepInterrupted(Exception):
    """The sweep was stopped (Ctrl-C, SIGTERM, SIGHUP) with trials unfinished; its state and tables are saved:
    resume it. `signal`: the signal that stopped it (None: SIGINT)."""

    def __init__(self, sweep_dir: str, signal: int | None = None):
        super().__init__(f"interrupted: continue with sweeps resume {sweep_dir}")
        self.sweep_dir = sweep_dir
        self.signal = signal


class TrialsFailed(Exception):
    """Every trial of the sweep errored: the message says why, each reason once with its count (the tables and
    the report are written)."""
