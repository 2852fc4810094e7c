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

Outside Tune's loop the three interrupt any command alike (`interrupting`, around the whole command), and `ray.init`'s
own SIGTERM handlers are undone once Ray has started (`handlers_kept`):

    with interrupting():              # Interrupt (a KeyboardInterrupt) on SIGINT, SIGTERM or SIGHUP
        with handlers_kept():
            ray.init()

A trial's worker ends on Ray's SIGTERM even where Python dropped its exit (`ray_worker_ends_on_sigterm`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by `signum`: 128 + its number (Ctrl-C 130, SIGTERM 143, SIGHUP 129)."""
    return 128 + signum


class Interrupt(KeyboardInterrupt):
    """A stop signal outside Tune's loop, raised where the command was, as Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal = signum


def received(interrupt: KeyboardInterrupt) -> int:
    """The signal behind a KeyboardInterrupt: Ctrl-C's unless it is an Interrupt."""
    return getattr(interrupt, "signal", signal.SIGINT)


# The stop signals taken in this process, in order, and how many `handlers_kept` windows are open. Python drops an
# exception raised by a signal handler that runs inside an at-fork hook ("Exception ignored"), as when a signal lands
# while Ray starts its processes: inside a window the signal is kept here and raised once Ray has started; outside
# one, the process ends on it as it would without these handlers.
_taken: list[int] = []
_windows = 0


def _rays_sigterm_exit(error: BaseException) -> bool:
    """Ray's SIGTERM handlers (ray/_private/worker.py, for a driver and for a worker, and node.py, all named
    sigterm_handler) end in SystemExit."""
    where = traceback.extract_tb(error.__traceback__)
    return isinstance(error, SystemExit) and any(frame.name == "sigterm_handler" for frame in where)


_in_a_worker = False  # whether ray_worker_ends_on_sigterm has set its hook in this process


def ray_worker_ends_on_sigterm() -> None:
    """In a trial's worker, once per process: Ray ends a worker it no longer needs with SIGTERM, whose handler
    raises SystemExit. Where that lands in a garbage collector's callback, Python drops it with a traceback in the
    sweep's output ("Exception ignored in: <function WeakSet...>", at the end of about one demo sweep in eight) and
    the worker goes on; here the signal is sent again instead, for Ray's handler to end the worker outside it: from a
    thread started now, a moment later (sent from the hook, it would be handled in the hook and dropped again; a
    thread started in the hook could wait forever on a lock of `threading` that the collector interrupted)."""
    global _in_a_worker
    if _in_a_worker:
        return
    _in_a_worker, hook, asked = True, sys.unraisablehook, queue.SimpleQueue()

    def resend():
        while True:
            asked.get()
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=resend, name="resend-sigterm", daemon=True).start()

    def dropped(unraisable):
        if _rays_sigterm_exit(unraisable.exc_value):
            asked.put(None)  # (SimpleQueue.put: safe in a collector's callback)
        else:
            hook(unraisable)

    sys.unraisablehook = dropped


@contextlib.contextmanager
def interrupting():
    """Around a whole command: Ctrl-C, SIGTERM and SIGHUP interrupt it alike, so that it ends in its one line and
    status (a sweep's run takes them over with `stop_signals`, whose handler stays to the end once a stop came). A
    signal ignored on purpose (`nohup`) stays ignored, and a process forked meanwhile (a multiprocessing pool's
    worker, which its pool ends with SIGTERM) takes it as it would have."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    owner, kept, hook = os.getpid(), _handlers(), sys.unraisablehook

    def interrupt(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, kept[signum])
            signal.raise_signal(signum)
            return
        _taken.append(signum)
        raise Interrupt(signum)

    def dropped(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, Interrupt) or _rays_sigterm_exit(error)):
            return hook(unraisable)
        signum = received(error) if isinstance(error, Interrupt) else signal.SIGTERM
        if _windows:
            _taken.append(signum)  # raised by handlers_kept once Ray has started
        else:  # nowhere to raise it again: the process ends on it, as without these handlers
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    sys.unraisablehook = dropped
    try:
        for signum, handler in kept.items():
            if handler in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(signum, interrupt)
        yield
    finally:
        sys.unraisablehook = hook
        for signum, handler in kept.items():
            if signal.getsignal(signum) is interrupt:  # (a stopped sweep's handler stays: see stop_signals)
                signal.signal(signum, handler)


@contextlib.contextmanager
def handlers_kept():
    """Around `ray.init`, which sets SIGTERM handlers of its own (one ends the driver with status 15 and no word):
    the command's (`interrupting`) come back after it, and a stop signal taken meanwhile is raised as one."""
    global _windows
    kept, seen = _handlers(), len(_taken)
    _windows += 1
    try:
        yield
    except SystemExit as exit:
        if _rays_sigterm_exit(exit):  # SIGTERM while Ray starts, told as the signal it was
            raise Interrupt(signal.SIGTERM) from None
        raise
    except Exception:
        if len(_taken) > seen:  # Ray failed to start after a stop signal (its handler ended Ray's processes)
            raise Interrupt(_taken[-1]) from None
        raise
    finally:
        _windows -= 1
        _put_back(kept)
    if len(_taken) > seen:  # taken, but its interrupt dropped on the way
        raise Interrupt(_taken[-1])


def _handlers() -> dict:
    return {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}


def _put_back(handlers: dict) -> None:
    if threading.current_thread() is threading.main_thread():
        for signum, handler in handlers.items():
            if handler is not None:  # None: a handler set outside Python, which Python cannot put back
                signal.signal(signum, handler)


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
        tunes = signal.getsignal(signal.SIGUSR1)
        if not callable(tunes):  # Tune's loop has not started: nothing of it to save yet
            raise Interrupt(signum)
        stop.signal = signum
        tunes(signal.SIGUSR1, frame)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers (as Tune)
        yield
        return
    previous = _handlers()
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # until Tune installs its own for this run
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT is handled here, as the other two are
    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # Tune's handler outlives its run: its event is gone
        if stop.signal is None:
            _put_back(previous)
