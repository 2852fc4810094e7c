"""One driver per sweep at a time: `sweeps run` and `sweeps resume` hold the sweep's folder while they drive it.

    with hold(sweep_dir):          # SweepError naming the live driver that holds it, if one does
        ...                        # the lock is rewritten every HEARTBEAT_S seconds while held
    holder(sweep_dir)              # the live holder's record ({"host", "pid", ...}), or None

The lock is a file in the sweep folder, created exclusively (O_EXCL: of two drivers, exactly one gets it, on local
and NFS folders alike), holding the driver's host, process id and start time, and rewritten every HEARTBEAT_S
seconds. A lock left by a driver that died (SIGKILL, a lost machine) blocks nothing: on the same host its process
is gone (or the id now names a process started later), and from any other host its heartbeat is older than
STALE_AFTER_S. On S3 and GCS pyarrow has no exclusive create: two drivers started within the same second can both
take the lock there; one started while another runs is refused as anywhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import psutil

from sweeps import storage
from sweeps.errors import SweepError

LOCK_FILE = "driver.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0  # six missed heartbeats: the driver is gone (or its host's clock is a minute off)


def _me() -> dict:
    started = psutil.Process().create_time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": started, "heartbeat": time.time()}


def _read(path: str) -> dict | None:
    """The lock's record; None where there is none or it cannot be read (a lock cut short by a crash)."""
    try:
        record = json.loads(storage.read_bytes(path))
        return record if isinstance(record, dict) and {"host", "pid", "heartbeat"} <= set(record) else None
    except (OSError, ValueError):
        return None


def _alive(record: dict) -> bool:
    if record["host"] != socket.gethostname():
        return time.time() - record["heartbeat"] < STALE_AFTER_S
    try:  # this host: the process itself, the same one (a process id is reused once its process is gone)
        return abs(psutil.Process(record["pid"]).create_time() - record.get("started", 0)) < 1
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def holder(sweep_dir: str) -> dict | None:
    """The record of the live driver that holds the sweep, or None."""
    record = _read(storage.join(sweep_dir, LOCK_FILE))
    return record if record and _alive(record) else None


def describe(record: dict) -> str:
    return f"process {record['pid']} on {record['host']}"


@contextlib.contextmanager
def hold(sweep_dir: str):
    """Hold the sweep while the block runs; SweepError, before anything else happens, where a live driver holds it."""
    path = storage.join(sweep_dir, LOCK_FILE)
    _take(path, sweep_dir)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), daemon=True, name="sweeps-lock-heartbeat")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(OSError):
            storage.delete(path)


def _take(path: str, sweep_dir: str) -> None:
    for _ in range(2):  # a stale lock is removed, then taken as if there had been none
        try:
            storage.create(path, json.dumps(_me()).encode())
            return
        except FileExistsError:
            record = _read(path)
            if record and _alive(record):
                raise SweepError(
                    f"sweep {sweep_dir} is being driven by {describe(record)}: wait for it to end (or stop it with "
                    f"Ctrl-C there, or `kill {record['pid']}` on {record['host']}), then `sweeps resume {sweep_dir}`"
                ) from None
            with contextlib.suppress(OSError):
                storage.delete(path)
    raise SweepError(f"sweep {sweep_dir} was just taken by another driver: see `sweeps status {sweep_dir}`")


def _heartbeat(path: str, stop: threading.Event) -> None:
    record = _me()
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(OSError):
            storage.write_bytes(path, json.dumps({**record, "heartbeat": time.time()}).encode())
