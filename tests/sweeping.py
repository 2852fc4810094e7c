"""What the tests of real sweeps share: the command line as a user runs it, and checks of a sweep's files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sweeps import asha

# Two small synthetic trials of 2 epochs (lr 1e-3 and 1e-2 on 1,000 signals): a whole sweep in seconds.
TWO_SMALL_TRIALS = ["--epochs", "2", "--no-early-stop", "--set", "n=1000", "--set", "hidden_size=10",
                    "--set", "batch_size=64", "--set", "grad_clip=1", "--set", "lr=0.001,0.01"]  # fmt: skip


def sweeps_cli(*args, timeout=300, dashboard=False, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeps", *_command(args, dashboard)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def _command(args, dashboard: bool) -> list[str]:
    """`sweeps ARGS`, where a sweep starts its local Ray without the dashboard unless the test asks for it
    (`dashboard`): the dashboard's processes cost every Ray start about 4 CPU-seconds, a few minutes of the suite.
    The tests of the dashboard, and the demo's, keep it."""
    args = [str(a) for a in args]
    starts_local_ray = args[:1] in (["run"], ["resume"]) and "--address" not in args and "--help" not in args
    return args + ["--no-dashboard"] if starts_local_ray and not dashboard else args


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (as the system hands out: free when asked)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_driver(*args, log: Path | None = None, env: dict | None = None, dashboard=False) -> subprocess.Popen:
    """`sweeps ...` in the background, in a session of its own: killing the session kills the driver and the
    local Ray it started, as a lost machine would. Ctrl-C (SIGINT) reaches it as it reaches a command typed at a
    terminal, even where the tests themselves run as a background job, which inherits SIGINT ignored. `env`: variables
    added to this process's environment; `dashboard`: as for sweeps_cli."""
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", *_command(args, dashboard)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def kill_driver(driver: subprocess.Popen) -> None:
    os.killpg(driver.pid, signal.SIGKILL)  # no chance to clean up
    driver.wait()


def wait_for(condition, timeout: float, what: str, driver: subprocess.Popen | None = None):
    """Poll `condition` until it returns something true; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = driver is not None and driver.poll() is not None  # (asked first: it may end after writing it)
        if value := condition():
            return value
        if ended:
            pytest.fail(f"the driver ended (status {driver.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def results_reported(trial_dir: Path) -> list[dict]:
    """Every result the trial reported to Ray, in order, repeats included (result.json, written as it runs)."""
    result = Path(trial_dir) / "result.json"
    return asha.parse_results(result.read_text() if result.exists() else "")


def epochs_reported(trial_dir: Path) -> list[int]:
    return [result["epoch"] for result in results_reported(trial_dir)]


def trial_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(d for d in Path(sweep_dir).glob("trial_*") if d.is_dir())


def checkpoint_dirs(trial_dir: Path) -> list[Path]:
    return sorted(Path(trial_dir).glob("checkpoint_*"))


def check_tables(sweep_dir, expected_trials: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials.parquet has every trial once; metrics.parquet every epoch of every trial exactly once."""
    trials = pd.read_parquet(Path(sweep_dir) / "trials.parquet")
    metrics = pd.read_parquet(Path(sweep_dir) / "metrics.parquet")
    assert len(trials) == expected_trials and trials.trial_id.is_unique
    assert not metrics.duplicated(["trial_id", "epoch"]).any()
    assert set(metrics.trial_id) == set(trials.trial_id)
    for trial in trials.itertuples():
        epochs = metrics[metrics.trial_id == trial.trial_id].epoch.tolist()
        assert epochs == list(range(1, trial.epochs + 1))
    assert not list(Path(sweep_dir).glob("*.tmp-*"))  # no half-written file left behind
    return trials, metrics
