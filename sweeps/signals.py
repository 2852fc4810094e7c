"""How a running sweep's driver stops on a signal: SIGTERM (batch schedulers, `timeout`, Kubernetes, `ray job stop`)
and SIGHUP (a closed terminal) stop it as Ctrl-C does: Tune stops the trials and saves the experiment's state, the
tables are written, the last line says how to continue, and the exit status is the shell's for that signal (130,
143, 129). A second signal while the first is being handled is told to wait, in one line, and changes nothing.

    stop = Stop()
    with stop_signals(stop):
        tuner.fit()
    stop.signal           # the first signal received, or None

Tune itself catches only SIGINT, and its handler gives SIGINT back to the previous one after the first: a second
Ctrl-C then raised KeyboardInterrupt in the middle of Tune's shutdown, and SIGTERM met Ray's own C++ handler,
which aborts the process (exit 134, no tables). So here one handler owns all three, and tells Tune through the handler
Tune installs for SIGUSR1, which sets the same "interrupted" event its SIGINT handler sets (ray/tune/tune.py,
_setup_signal_catching).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by `signum`: 128 + its number (Ctrl-C 130, SIGTERM 143, SIGHUP 129)."""
    return 128 + signum


@dataclass
class Stop:
    signal: int | None = None  # the first stop signal received


@contextlib.contextmanager
def stop_signals(stop: Stop):
    """Around `tuner.fit()`: the first of SIGINT, SIGTERM or SIGHUP asks Tune to stop, and is kept in `stop`; later
    ones wait for it, to the end of the process once one came (what follows is the tables and the last line)."""

    def handle(signum, frame):
        if stop.signal is not None:
            print(
                f"sweeps: already stopping ({signal.Signals(signum).name}): the state and tables are being saved",
                file=sys.stderr,
                flush=True,
            )
            return
        stop.signal = signum
        tunes = signal.getsignal(signal.SIGUSR1)
        if not callable(tunes):  # Tune's loop has not started: nothing of it to save yet
            raise KeyboardInterrupt
        tunes(signal.SIGUSR1, frame)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers (as Tune)
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # until Tune installs its own for this run
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT is handled here, as the other two are
    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # Tune's handler outlives its run: its event is gone
        if stop.signal is None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
