"""One driver per sweep: the lock in the sweep folder, taken for real by processes of this machine."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from sweeps import lock
from sweeps.errors import SweepError


def lock_record(folder) -> dict:
    return json.loads((folder / lock.LOCK_FILE).read_text())


def test_a_held_sweep_is_refused_in_one_line_naming_its_driver_and_freed_after(tmp_path):
    with lock.hold(str(tmp_path)):
        assert lock.holder(str(tmp_path))["pid"] == os.getpid()
        with pytest.raises(SweepError) as refused:
            with lock.hold(str(tmp_path)):
                pass
        message = str(refused.value)
        assert f"is being driven by process {os.getpid()} on {socket.gethostname()}" in message
        assert f"`sweeps resume {tmp_path}`" in message and "\n" not in message
    assert not (tmp_path / lock.LOCK_FILE).exists() and lock.holder(str(tmp_path)) is None
    with lock.hold(str(tmp_path)):  # free again
        pass


def test_a_lock_left_by_a_driver_that_died_blocks_nothing(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(dead.pid).create_time()
    dead.wait()
    stale = {"host": socket.gethostname(), "pid": dead.pid, "started": started, "heartbeat": time.time()}
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps(stale))
    assert lock.holder(str(tmp_path)) is None
    # A process id now used by another process (this one) is not the driver that wrote the lock either.
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps({**stale, "pid": os.getpid()}))
    assert lock.holder(str(tmp_path)) is None
    (tmp_path / lock.LOCK_FILE).write_text("")  # cut short by a crash
    with lock.hold(str(tmp_path)):
        assert lock_record(tmp_path)["pid"] == os.getpid()


def test_another_hosts_driver_is_judged_by_its_heartbeat(tmp_path):
    elsewhere = {"host": "another-host", "pid": 1, "started": 0.0}
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps({**elsewhere, "heartbeat": time.time() - 5}))
    with pytest.raises(SweepError, match="driven by process 1 on another-host"):
        with lock.hold(str(tmp_path)):
            pass
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps({**elsewhere, "heartbeat": time.time() - lock.STALE_AFTER_S}))
    with lock.hold(str(tmp_path)):
        assert lock_record(tmp_path)["host"] == socket.gethostname()


def test_the_holder_rewrites_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    with lock.hold(str(tmp_path)):
        first = lock_record(tmp_path)["heartbeat"]
        time.sleep(0.3)
        assert lock_record(tmp_path)["heartbeat"] > first


def _try_to_hold(folder: str, held) -> None:
    try:
        with lock.hold(folder):
            held.put(os.getpid())
            time.sleep(1.0)
    except SweepError:
        pass


def test_of_drivers_started_at_once_exactly_one_holds_the_sweep(tmp_path):
    context = multiprocessing.get_context("fork")  # the children only take a file lock: fork is safe, and quick
    held = context.Queue()
    children = [context.Process(target=_try_to_hold, args=(str(tmp_path), held)) for _ in range(6)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=30)
    assert held.qsize() == 1 and not (tmp_path / lock.LOCK_FILE).exists()
