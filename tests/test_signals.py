"""How the driver takes stop signals, in this process (tests/test_faults.py sends them to a real sweep's driver)."""

import os
import signal
import threading

import pytest

from sweeps import signals


def test_the_first_stop_signal_asks_tunes_handler_and_later_ones_wait(capsys):
    asked = []
    stop = signals.Stop()
    before = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    with signals.stop_signals(stop):
        signal.signal(signal.SIGUSR1, lambda signum, frame: asked.append(signum))  # as Tune installs its own
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # during the stop: told to wait, and nothing else
    assert stop.signal == signal.SIGTERM and asked == [signal.SIGUSR1]
    assert capsys.readouterr().err == "sweeps: already stopping (SIGINT): the state and tables are being saved\n"
    assert signals.exit_status(stop.signal) == 143 and signals.exit_status(signal.SIGHUP) == 129
    # Once a stop came, the handlers stay for the rest of the command (its tables and last line); put them back here.
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_a_signal_before_tunes_loop_started_interrupts_at_once():
    stop = signals.Stop()
    before = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    with pytest.raises(KeyboardInterrupt), signals.stop_signals(stop):
        os.kill(os.getpid(), signal.SIGHUP)
    assert stop.signal == signal.SIGHUP
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_without_a_signal_the_handlers_are_put_back():
    before = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    with signals.stop_signals(signals.Stop()):
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in signals.STOP_SIGNALS} == before


def test_a_thread_other_than_the_main_one_is_left_alone():
    """Only the main thread may set signal handlers (Tune itself skips them elsewhere): a sweep run from a thread
    runs, and the handlers stay as they were."""
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def drive():
        with signals.stop_signals(signals.Stop()):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=drive)
    thread.start()
    thread.join()
    assert seen == [before] and signal.getsignal(signal.SIGTERM) == before
