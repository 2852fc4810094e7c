"""How the driver takes stop signals, in this process (tests/test_faults.py sends them to a real sweep's driver)."""

import os
import signal
import subprocess
import sys
import threading
import time

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
    """Nothing of Tune's to stop yet: raised where the driver is, and the handlers put back (a stop not taken)."""
    stop = signals.Stop()
    before = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    with pytest.raises(KeyboardInterrupt) as raised, signals.stop_signals(stop):
        os.kill(os.getpid(), signal.SIGHUP)
    assert signals.received(raised.value) == signal.SIGHUP and stop.signal is None
    assert {s: signal.getsignal(s) for s in signals.STOP_SIGNALS} == before


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


@pytest.fixture
def handlers_restored():
    """The handlers a fresh process has (another test may have started Ray here, which sets its own), put back after."""
    before = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_outside_a_run_sigterm_and_sighup_interrupt_as_ctrl_c_does(handlers_restored):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` leaves it: ignored on purpose, and it stays so
    with pytest.raises(KeyboardInterrupt) as raised, signals.interrupting():
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)
    assert signals.received(raised.value) == signal.SIGTERM and signals.received(KeyboardInterrupt()) == signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the command's handlers end with it


def test_a_process_forked_meanwhile_ends_on_sigterm_as_it_would_have(handlers_restored):
    """A multiprocessing pool ends its forked workers with SIGTERM: raised as an interrupt there, it hung the pool."""
    ready, started = os.pipe()
    with signals.interrupting():
        child = os.fork()
        if child == 0:
            try:
                os.write(started, b"!")  # (a signal that came before Python's own after-fork setup would be dropped)
                time.sleep(60)
            finally:
                os._exit(0)  # (never pytest's session in the child)
        os.read(ready, 1)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
    os.close(ready), os.close(started)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_the_handlers_a_library_sets_are_undone(handlers_restored):
    with signals.interrupting():
        ours = signal.getsignal(signal.SIGTERM)
        with signals.handlers_kept():
            signal.signal(signal.SIGTERM, lambda signum, frame: None)  # as ray.init sets its own
        assert signal.getsignal(signal.SIGTERM) == ours
        with pytest.raises(KeyboardInterrupt) as raised, signals.handlers_kept():
            _rays_sigterm_handler()
        assert signals.received(raised.value) == signal.SIGTERM
        with pytest.raises(SystemExit), signals.handlers_kept():
            raise SystemExit(signal.SIGTERM)  # anyone else's exit is left as it is


class _SignalledInADestructor:
    """Python drops an exception raised in a destructor, as in an at-fork hook, where a signal landing while Ray
    starts its processes raised one."""

    def __init__(self, signum):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)


def _rays_sigterm_handler():
    def sigterm_handler():  # as Ray names both of its own (ray/_private/worker.py and node.py): sys.exit on SIGTERM
        raise SystemExit(signal.SIGTERM)

    sigterm_handler()


class _RaysHandlerInADestructor:
    def __del__(self):
        _rays_sigterm_handler()


@pytest.mark.parametrize(
    "dropped, signum",
    [(lambda: _SignalledInADestructor(signal.SIGHUP), signal.SIGHUP), (_RaysHandlerInADestructor, signal.SIGTERM)],
)
def test_a_stop_signal_whose_interrupt_python_dropped_is_raised_after_ray_starts(
    dropped, signum, handlers_restored, capsys
):
    with pytest.raises(KeyboardInterrupt) as raised, signals.interrupting(), signals.handlers_kept():
        dropped()  # (deleted at once)
    assert signals.received(raised.value) == signum
    assert "Exception ignored" not in capsys.readouterr().err


def test_a_dropped_interrupt_with_nowhere_to_go_ends_the_process_on_its_signal():
    """Outside a window where Ray starts, no one would raise it again: the process ends as without the handlers."""
    script = (
        "import os, signal, time\n"
        "from sweeps import signals\n"
        "from tests.test_signals import _SignalledInADestructor\n"
        "with signals.interrupting():\n"
        "    _SignalledInADestructor(signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    ended = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ended.returncode == -signal.SIGTERM and "Exception ignored" not in ended.stderr, ended.stderr


def test_a_trial_worker_whose_exit_python_dropped_ends_as_ray_meant_without_a_traceback():
    """Ray ends a trial's worker with SIGTERM; its handler's SystemExit, raised in a garbage collector's callback,
    was dropped with a traceback in the sweep's output (seen at the end of the demo) and the worker went on."""
    script = (
        "import signal, time\n"
        "from sweeps import signals\n"
        "from tests.test_signals import _SignalledInADestructor\n"
        "def sigterm_handler(signum, frame):  # as a Ray worker's (ray/_private/worker.py)\n"
        "    raise SystemExit(1)\n"
        "signal.signal(signal.SIGTERM, sigterm_handler)\n"
        "signals.ray_worker_ends_on_sigterm()\n"
        "_SignalledInADestructor(signal.SIGTERM)\n"
        "time.sleep(30)\n"
        "print('went on')\n"
    )
    ended = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ended.returncode == 1 and "Exception ignored" not in ended.stderr, ended.stderr
    assert "went on" not in ended.stdout


def test_a_stopped_sweeps_handler_outlasts_the_command(handlers_restored):
    """After a stop, the command's last lines are still printed under the handler that tells a second signal to
    wait: leaving `interrupting` keeps it."""
    with signals.interrupting():
        with signals.stop_signals(signals.Stop()):
            signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # as Tune installs its own
            os.kill(os.getpid(), signal.SIGTERM)
        waits = signal.getsignal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is waits and waits not in (signal.SIG_DFL, None)


def test_a_broken_pipe_that_is_not_the_output_is_the_machines_error(handlers_restored, monkeypatch, capsys):
    from sweeps import __main__, report

    def lost(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")  # as from a socket to a storage server

    monkeypatch.setattr(report, "write_report", lost)
    assert __main__.main(["report", "results/showcase/synthetic"]) == 1
    assert capsys.readouterr().err.startswith("sweeps: error: [Errno 32] Broken pipe: check the storage path")


@pytest.fixture
def report_stopped_by(monkeypatch):
    """Makes the report's writing stop on a signal (the process sends it to itself: a real signal, a real handler)."""
    from sweeps import report

    def stop_with(signum):
        monkeypatch.setattr(report, "write_report", lambda *args, **kwargs: os.kill(os.getpid(), signum))

    return stop_with


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_finished_sweep_writes_its_report_says_how_to_write_it(
    signum, handlers_restored, report_stopped_by, monkeypatch, tmp_path
):
    """The sweep is complete when `sweeps run` or `resume` writes its report: the line says so and how to write it."""
    from sweeps import __main__
    from sweeps.errors import Interrupted

    report_stopped_by(signum)
    monkeypatch.setattr(__main__, "_summary", lambda sweep_dir: None)
    with pytest.raises(Interrupted) as raised, signals.interrupting():
        __main__._finish(str(tmp_path), no_report=False)
    assert str(raised.value) == (
        "interrupted after the sweep's run: the sweep is complete and saved; "
        f"write its report with sweeps report {tmp_path}"
    )
    assert raised.value.signal == signum


def test_a_signal_outside_a_sweeps_run_ends_the_command_in_one_line(handlers_restored, report_stopped_by, capsys):
    """`sweeps report` stopped by SIGTERM: the shell's status for it, one line, no traceback."""
    from sweeps import __main__

    report_stopped_by(signal.SIGTERM)
    assert __main__.main(["report", "results/showcase/synthetic"]) == 143
    assert capsys.readouterr().err == (
        "sweeps: interrupted (SIGTERM): the files written so far are whole; run the command again to finish\n"
    )
