"""Load: a 100-trial Optuna sweep on this machine, every trial accounted for and the driver's memory flat."""

import threading

import psutil
import pytest

from tests.sweeping import check_tables, start_driver

pytestmark = pytest.mark.ray  # starts Ray: not in `make test-fast`

TRIALS = 100


def sample_memory(process: psutil.Process, samples: list, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            samples.append(process.memory_info().rss)
        except psutil.NoSuchProcess:
            return


@pytest.mark.timeout(900)
def test_a_hundred_optuna_trials(tmp_path):
    # The quick preset's ASHA (grace 2) over 6 epochs of 1,000 signals: mostly what Tune spends per trial.
    driver = start_driver(
        "run",
        "synthetic",
        "--search",
        "optuna",
        "--num-samples",
        TRIALS,
        "--epochs",
        6,
        "--set",
        "n=1000",
        "--storage",
        tmp_path,
        "--name",
        "load",
        "--no-report",
        log=tmp_path / "driver.log",
    )
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(psutil.Process(driver.pid), samples, stop))
    sampler.start()
    try:
        assert driver.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        stop.set()
        sampler.join()
    trials, _ = check_tables(tmp_path / "load", TRIALS)
    assert (trials.status == "TERMINATED").all()
    assert trials.stopped_early.sum() > TRIALS / 4  # ASHA cut some of them
    # Flat: the driver's peak over the last half of the sweep is close to its peak over the first half.
    half = len(samples) // 2
    first, second = max(samples[:half]), max(samples[half:])
    print(
        f"driver peak RSS: first half {first / 2**20:.0f} MiB, second half {second / 2**20:.0f} MiB, {len(samples)} samples"
    )
    assert second < 1.25 * first
