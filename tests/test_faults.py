"""Faults on real Ray, at tiny scale: each test does the harmful thing for real (SIGKILL to a trial's worker or to
the driver, a node removed from a cluster, a truncated checkpoint, a diverging trial, a full disk) and checks that
the sweep goes on and that nothing finished is lost or run again."""

import gc
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec.implementations.local
import pandas as pd
import psutil
import pyarrow
import pyarrow.fs
import pytest
from ray.cluster_utils import Cluster
from ray.tune import ExperimentAnalysis

from sweeps import checkpoints
from sweeps.folder import tuner_saved_whole
from sweeps.lock import LOCK_FILE
from tests.sweeping import (
    check_tables,
    checkpoint_dirs,
    epochs_reported,
    kill_driver,
    results_reported,
    start_driver,
    sweeps_cli,
    trial_dirs,
    wait_for,
)

pytestmark = [pytest.mark.ray, pytest.mark.faults]  # starts Ray, kills things: not in `make test-fast`

# Two or four small synthetic trials, checkpointed every 3 epochs, long enough to be caught mid-run.
CHECKPOINT_EVERY = 3
TWO_TRIALS = [
    "--checkpoint-every",
    str(CHECKPOINT_EVERY),
    "--set",
    "n=1000",
    "--set",
    "hidden_size=10",
    "--set",
    "batch_size=32",
    "--set",
    "grad_clip=1",
    "--set",
    "lr=0.001,0.01",
    "--no-early-stop",
    "--no-report",
]


def run_args(sweep_dir: Path, epochs: int, *extra) -> list:
    return [
        "run",
        "synthetic",
        "--storage",
        sweep_dir.parent,
        "--name",
        sweep_dir.name,
        "--epochs",
        epochs,
        *TWO_TRIALS,
        *extra,
    ]


def progress(sweep_dir: Path) -> dict:
    """Per trial folder: (epochs reported, checkpoint folders)."""
    return {d.name: (epochs_reported(d), checkpoint_dirs(d)) for d in trial_dirs(sweep_dir)}


def mid_training(sweep_dir: Path, checkpoints_each: int, epochs: int = 40) -> bool:
    """Both trials have this many checkpoints, and neither is near its end."""
    seen = progress(sweep_dir)
    return len(seen) == 2 and all(len(c) >= checkpoints_each and e and max(e) < epochs - 4 for e, c in seen.values())


def past_a_recorded_checkpoint(sweep_dir: Path) -> bool:
    """Both trials mid-training, each with an epoch logged after its first checkpoint. Ray asks a trial for the epoch
    after a checkpoint only once it has recorded the checkpoint (TuneController holds the decision until the save is
    processed, Ray 2.60): a worker killed from here goes on from a checkpoint. (Killed between the checkpoint's folder
    and Ray's record of it, it would start again from scratch, as Ray knows of no checkpoint.)"""
    return mid_training(sweep_dir, 1) and all(
        max(epochs) > CHECKPOINT_EVERY for epochs, _ in progress(sweep_dir).values()
    )


def trial_workers(driver: subprocess.Popen) -> list[psutil.Process]:
    """The driver's Ray worker processes that run trials (Ray titles them after the trainable)."""
    return [p for p in psutil.Process(driver.pid).children(recursive=True) if "ImplicitFunc" in " ".join(p.cmdline())]


def test_a_killed_trial_worker_restarts_from_its_last_checkpoint(tmp_path):
    sweep_dir = tmp_path / "worker"
    driver = start_driver(*run_args(sweep_dir, 40))
    wait_for(lambda: past_a_recorded_checkpoint(sweep_dir), 180, "both trials to pass their first checkpoint", driver)
    victim = trial_workers(driver)[0]
    victim.kill()  # SIGKILL
    assert driver.wait(timeout=300) == 0

    trials, _ = check_tables(sweep_dir, 2)  # metrics.parquet: every epoch of both trials exactly once
    assert (trials.status == "TERMINATED").all() and (trials.epochs == 40).all()
    failed = [d for d in trial_dirs(sweep_dir) if (d / "error.txt").exists()]  # Ray records the worker's death
    assert len(failed) == 1, "exactly the killed worker's trial failed and was restarted"
    epochs = epochs_reported(failed[0])
    assert epochs.count(1) == 1, f"the restarted trial began again from scratch: {epochs}"
    repeats = [i for i in range(1, len(epochs)) if epochs[i] <= epochs[i - 1]]
    for i in repeats:  # killed after a checkpoint, it goes on right after it; killed later, from that checkpoint again
        assert (epochs[i] - 1) % CHECKPOINT_EVERY == 0, f"it did not go on from a checkpoint: {epochs}"


def test_driver_killed_again_and_again_then_resume_finishes_without_rerunning(tmp_path):
    sweep_dir, epochs = tmp_path / "killed", 12  # checkpoints at 8 and 12 (the quick preset checkpoints every 8)
    args = [
        "run",
        "synthetic",
        "--storage",
        tmp_path,
        "--name",
        "killed",
        "--no-early-stop",
        "--no-report",
        "--set",
        "hidden_size=10,25",
        "--set",
        "batch_size=32",
        "--set",
        "n=1000",
        "--epochs",
        epochs,
    ]

    def finished(seen):  # trial folder -> the epochs it reported, for the trials that reached the last epoch
        return {name: reported for name, (reported, _) in seen.items() if epochs in reported}

    def first_results():
        return any(reported for reported, _ in progress(sweep_dir).values())

    counts = []  # checkpoint folders seen at each poll

    def checkpoint_being_written():  # a checkpoint folder has just appeared: Ray may still be filling it
        counts.append(sum(len(c) for _, c in progress(sweep_dir).values()))
        return len(counts) > 1 and counts[-1] > counts[-2]

    def two_more_finished():
        return len(finished(progress(sweep_dir))) >= len(done_before) + 2

    done_before = {}
    for what, moment in [
        ("the first results", first_results),
        ("a checkpoint write", checkpoint_being_written),
        ("two more trials finished", two_more_finished),
    ]:
        command = ["resume", sweep_dir, "--no-report"] if (sweep_dir / "sweep.json").exists() else args
        driver = start_driver(*command)
        wait_for(moment, 240, what, driver)
        kill_driver(driver)
        at_kill = progress(sweep_dir)
        for name, reported in done_before.items():  # finished trials are never run again
            assert at_kill[name][0] == reported, f"{name} ran again after it had finished: {at_kill[name][0]}"
        done_before = finished(at_kill)
    assert len(done_before) >= 2

    done = sweeps_cli("resume", sweep_dir, "--no-report")
    assert done.returncode == 0, done.stderr[-3000:]
    trials, _ = check_tables(sweep_dir, 8)
    assert (trials.status == "TERMINATED").all() and (trials.epochs == epochs).all()
    for name, reported in done_before.items():
        assert epochs_reported(sweep_dir / name) == reported, f"{name} ran again after it had finished"


def recorded(sweep_dir: Path) -> dict:
    """Trial folder -> the checkpoint Ray's own record of the experiment names (what a resume goes on from)."""
    return {Path(t.path).name: t.checkpoint for t in ExperimentAnalysis(str(sweep_dir)).trials}


KILLED_EPOCHS = 30  # the budget of the sweep killed mid-training: its resume trains what is left


def kill_mid_training(sweep_dir: Path) -> None:
    """Start the two-trial sweep and SIGKILL its driver once Ray records each trial with a second checkpoint."""
    driver = start_driver(*run_args(sweep_dir, KILLED_EPOCHS))

    def resumable():
        recorded_now = mid_training(sweep_dir, 2, KILLED_EPOCHS) and recorded(sweep_dir)
        return recorded_now and all(
            c is not None and not c.path.endswith("checkpoint_000000") for c in recorded_now.values()
        )

    wait_for(resumable, 180, "Ray to record a second checkpoint of each trial", driver)
    kill_driver(driver)


def cut_log(trial_dir: Path, last_epoch: int) -> None:
    """Ray's log of the trial (result.json, what resume and collect read) as a driver killed before it logged the
    epochs after `last_epoch` leaves it."""
    kept = [result for result in results_reported(trial_dir) if result["epoch"] <= last_epoch]
    (trial_dir / "result.json").write_text("".join(json.dumps(result) + "\n" for result in kept))


@pytest.fixture(scope="module")
def killed_sweep(tmp_path_factory) -> Path:
    """The two-trial sweep with its driver SIGKILLed mid-training, made once: each test damages its own copy (Ray's
    record names the copy's own folders: it keeps them relative to the sweep's)."""
    sweep_dir = tmp_path_factory.mktemp("killed") / "killed"
    kill_mid_training(sweep_dir)
    return sweep_dir


def copy_of(killed_sweep: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(killed_sweep, tmp_path / killed_sweep.name, symlinks=True))


def test_a_recorded_checkpoint_that_is_gone_gives_way_to_the_newest(tmp_path, killed_sweep):
    # Ray deletes a replaced checkpoint at once but writes its record now and then, and logs a result after it has
    # stored its checkpoint: killed in between, its record names a folder that is gone and its log stops short of
    # the newest checkpoint. Ray alone would refuse to resume that trial; going on from the newest loses nothing.
    sweep_dir = copy_of(killed_sweep, tmp_path)
    name, checkpoint = sorted(recorded(sweep_dir).items())[0]
    shutil.rmtree(checkpoint.path, ignore_errors=True)  # (or Ray had deleted it already)
    taken = {folder: checkpoints.load(folder) for folder in checkpoint_dirs(sweep_dir / name)}  # now: Ray prunes
    source, (state, history) = max(taken.items(), key=lambda item: item[1][0]["epoch"])
    epoch = state["epoch"]
    cut_log(sweep_dir / name, epoch - 2)
    logged = epochs_reported(sweep_dir / name)

    done = sweeps_cli("resume", sweep_dir, "--no-report")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Ray's record names {checkpoint.path}, which is gone: going on from {source}" in done.stderr
    assert epochs_reported(sweep_dir / name)[len(logged)] == epoch + 1
    trials, metrics = check_tables(sweep_dir, 2)  # every epoch once: the two cut from the log are the checkpoint's
    assert (trials.status == "TERMINATED").all() and (trials.epochs == KILLED_EPOCHS).all()
    trial_id = "_".join(name.split("_")[1:3])
    filled = metrics[(metrics.trial_id == trial_id) & metrics.epoch.isin([epoch - 1, epoch])].val_mse.tolist()
    assert filled == [row["val_mse"] for row in history if row["epoch"] in (epoch - 1, epoch)]


@pytest.mark.parametrize("fallback", ["previous", "scratch"])
def test_a_truncated_checkpoint_is_named_and_its_trial_goes_on_as_chosen(tmp_path, killed_sweep, fallback):
    sweep_dir = copy_of(killed_sweep, tmp_path)
    # As resume does first (see the test above): each recorded folder is there.
    checkpoints.mend_records(ExperimentAnalysis(str(sweep_dir)))
    latest = {name: Path(checkpoint.path) for name, checkpoint in recorded(sweep_dir).items()}
    # The first trial's is truncated, and so is any it saved after Ray's last record (checkpoints.restore).
    broken_trial, healthy_trial = sorted(latest)
    model_file = latest[broken_trial] / checkpoints.MODEL_FILE
    for folder in checkpoint_dirs(sweep_dir / broken_trial):
        if folder.name >= latest[broken_trial].name:
            (folder / checkpoints.MODEL_FILE).write_bytes((folder / checkpoints.MODEL_FILE).read_bytes()[:100])
    older = [c for c in checkpoint_dirs(sweep_dir / broken_trial) if c.name < latest[broken_trial].name]
    expected_start = checkpoints.load(older[-1])[0]["epoch"] + 1 if fallback == "previous" and older else 1
    # The other goes on from its newest checkpoint (read now: Ray prunes old checkpoints).
    healthy_epoch = max(checkpoints.load(c)[0]["epoch"] for c in checkpoint_dirs(sweep_dir / healthy_trial))
    reported_before = {name: len(epochs_reported(sweep_dir / name)) for name in latest}

    done = sweeps_cli("resume", sweep_dir, "--corrupt-checkpoint", fallback, "--no-report")
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert f"cannot read checkpoint {model_file}" in output  # which trial (its folder) and which file
    after = {name: epochs_reported(sweep_dir / name)[count:] for name, count in reported_before.items()}
    assert after[broken_trial][0] == expected_start
    assert after[healthy_trial][0] == healthy_epoch + 1
    trials, _ = check_tables(sweep_dir, 2)
    assert (trials.status == "TERMINATED").all() and (trials.epochs == KILLED_EPOCHS).all()


def test_a_node_lost_mid_sweep_moves_its_trials_to_the_other_node(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        head, worker = cluster.head_node.node_id, cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        sweep_dir = tmp_path / "lost-node"
        driver = start_driver(*run_args(sweep_dir, 40, "--address", cluster.address))

        def checkpointed_on_worker():
            for trial in trial_dirs(sweep_dir):
                results = results_reported(trial)
                if checkpoint_dirs(trial) and results and results[-1]["node_id"] == worker.node_id:
                    return True
            return False

        wait_for(checkpointed_on_worker, 180, "a trial to checkpoint on the second node", driver)
        cluster.remove_node(worker, allow_graceful=False)
        assert driver.wait(timeout=300) == 0
    finally:
        cluster.shutdown()
    trials, metrics = check_tables(sweep_dir, 2)
    assert (trials.status == "TERMINATED").all() and (trials.epochs == 40).all()
    assert worker.node_id in set(metrics.node_id)  # some epochs ran on the lost node ...
    assert (trials.node_id == head).all()  # ... and every trial ended on the head


def test_a_diverging_trial_is_recorded_and_left_out_of_the_best(tmp_path, stocks_csv):
    # The predictor head is linear, hence unbounded: at lr 1e20 its loss is not finite from the first epoch.
    done = sweeps_cli(
        "run",
        "snp500-predict",
        "--data",
        stocks_csv,
        "--storage",
        tmp_path,
        "--name",
        "nan",
        "--set",
        "hidden_size=8",
        "--set",
        "normalize=first",
        "--set",
        "lr=0.001,1e20",
        "--epochs",
        "3",
        "--no-early-stop",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials, _ = check_tables(tmp_path / "nan", 2)
    bad, good = trials[trials["config/lr"] == 1e20].iloc[0], trials[trials["config/lr"] == 0.001].iloc[0]
    assert bad.diverged and bad.epochs == 1 and re.match(r"diverged: train_loss (nan|inf) at epoch 1 ", bad.error)
    assert not good.diverged and good.epochs == 3 and pd.isna(good.error)
    assert f"at trial {good.trial_id}" in done.stdout and "1 diverged" in done.stdout
    report = (tmp_path / "nan" / "report.md").read_text()
    assert f"Trial `{good.trial_id}`" in report and f"Trial `{bad.trial_id}`" not in report
    assert f"- `{bad.trial_id}`: {bad.error}" in report  # and why it was left out


def test_a_full_disk_is_a_clear_error_and_loses_no_table(tmp_path, tiny_disk):
    done = sweeps_cli("run", "synthetic", "--storage", tiny_disk, "--name", "full", "--epochs", "3", *TWO_TRIALS[:-1])
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sweeps: error: no space left on device") and "free some space" in last, done.stderr[-2000:]
    assert not list((tiny_disk / "full").glob("*.tmp-*"))
    for table in (tiny_disk / "full").glob("*.parquet"):
        pd.read_parquet(table)  # whatever was written is whole


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 300 KB file system (tmpfs), so writes fail with ENOSPC as on a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_writes_to_a_full_disk_keep_the_previous_file(tiny_disk):
    from sweeps import storage

    table = str(tiny_disk / "trials.parquet")
    storage.write_parquet(table, pd.DataFrame({"trial_id": ["a"], "epochs": [1]}))
    with pytest.raises(OSError):
        storage.write_parquet(table, pd.DataFrame({"x": range(200_000)}).assign(y=lambda d: d.x.astype(str)))
    assert pd.read_parquet(table).trial_id.tolist() == ["a"]
    assert [p.name for p in tiny_disk.iterdir()] == ["trials.parquet"]


def test_rays_writes_to_a_full_disk_keep_the_previous_file(tiny_disk, tmp_path):
    """Ray's uploads into a local sweep folder (storage.for_ray) end as storage's own writes do."""
    from sweeps import storage

    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "experiment_state.json").write_bytes(b"x" * 1_000_000)
    path, filesystem = storage.for_ray(str(tiny_disk))
    (tiny_disk / "experiment_state.json").write_text("{}")
    with pytest.raises(OSError, match="No space left on device"):
        pyarrow.fs.copy_files(str(staged), path, destination_filesystem=filesystem)
    assert [p.name for p in tiny_disk.iterdir()] == ["experiment_state.json"]
    assert (tiny_disk / "experiment_state.json").read_text() == "{}"


class _SourceLostMidway(pyarrow.fs.FSSpecHandler):
    """This machine's files, each of which fails to be read after its first 7 bytes (a mount lost midway)."""

    def __init__(self):
        super().__init__(fsspec.implementations.local.LocalFileSystem())

    def open_input_stream(self, path):
        class Failing(io.RawIOBase):
            def readable(self):
                return True

            def readinto(self, buffer):
                if getattr(self, "started", False):
                    raise OSError("the mount is gone")
                self.started = True
                buffer[:7] = b"partial"
                return 7

        return pyarrow.PythonFile(Failing(), mode="r")


def test_rays_copies_whose_source_fails_midway_keep_the_previous_file(tmp_path):
    from sweeps import storage

    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "experiment_state.json").write_text("{}")
    path, filesystem = storage.for_ray(str(tmp_path / "sweep"))
    with pytest.raises(OSError, match="the mount is gone"):
        pyarrow.fs.copy_files(
            str(tmp_path / "sweep" / "experiment_state.json"),
            f"{path}/experiment_state.json",
            source_filesystem=pyarrow.fs.PyFileSystem(_SourceLostMidway()),
            destination_filesystem=filesystem,
            chunk_size=10,
        )
    gc.collect()  # (Arrow leaves the destination stream to the garbage collector)
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == ["experiment_state.json"]
    assert (tmp_path / "sweep" / "experiment_state.json").read_text() == "{}"


def test_a_file_ray_writes_in_a_block_an_exception_leaves_keeps_the_previous_one(tmp_path):
    """Ray writes tuner.pkl in a `with` block, whose exit closes the stream whatever happened: a stop signal while
    it pickled must not put what was written so far in place. One opened while an exception is being handled is
    written as usual."""
    from sweeps import storage

    path, filesystem = storage.for_ray(str(tmp_path))
    (tmp_path / "tuner.pkl").write_bytes(b"whole")
    with pytest.raises(KeyboardInterrupt), filesystem.open_output_stream(f"{path}/tuner.pkl") as stream:
        stream.write(b"cut")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["tuner.pkl"] and (tmp_path / "tuner.pkl").read_bytes() == b"whole"
    try:
        raise ValueError
    except ValueError:
        with filesystem.open_output_stream(f"{path}/tuner.pkl") as stream:
            stream.write(b"new")
    assert (tmp_path / "tuner.pkl").read_bytes() == b"new"


def test_resume_removes_only_the_temporaries_written_before_it_began(tmp_path):
    """A killed run's leftovers go; one written since is a live writer's (the lock's heartbeat, a report)."""
    from sweeps import storage

    (tmp_path / "trial").mkdir()
    left = tmp_path / "trial" / "result.json.tmp-0123abcd"
    other = tmp_path / "notes.tmp-files"  # not a temporary name of ours
    live = tmp_path / "driver.lock.tmp-89abcdef"
    for old in (left, other):
        old.write_text("{")
        os.utime(old, (time.time() - 60,) * 2)
    live.write_text("{")
    assert storage.remove_temporaries(str(tmp_path), before=time.time() - 1) == [str(left)]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [live.name, other.name]


# A driver that kills itself and its Ray (the whole session, as a lost machine) halfway through writing a file of
# Ray's record of the sweep into the sweep's folder, the second time it does.
KILLED_IN_AN_UPLOAD = """
import os, signal, sys
from sweeps import storage
from sweeps.__main__ import main

uploads = []

def write(self, data, write=storage._RenamedWhenWhole.write):
    if os.path.basename(self.final_path).startswith("experiment_state-"):
        uploads.append(self.final_path)
        if len(uploads) == 2:
            write(self, memoryview(data).cast("B")[: len(data) // 2])
            os.killpg(0, signal.SIGKILL)
    return write(self, data)

storage._RenamedWhenWhole.write = write
sys.exit(main())
"""


def test_a_driver_killed_while_ray_uploads_its_state_resumes_from_the_last_whole_one(tmp_path):
    """Ray uploads its state into the sweep's folder with pyarrow's copy_files, which wrote over the file in place:
    a driver killed then (seen when HyperBand paused trials, which makes Tune save at once) left it empty and the
    sweep beyond resuming. Through storage.for_ray the folder keeps the previous, whole one."""
    sweep_dir = tmp_path / "killed-in-an-upload"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_IN_AN_UPLOAD, *map(str, run_args(sweep_dir, 6, "--no-dashboard"))],
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (state,) = sweep_dir.glob("experiment_state-*.json")
    (cut_short,) = sweep_dir.glob("experiment_state-*.json.tmp-*")  # the upload the kill stopped
    assert json.loads(state.read_text())
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut_short.read_text())
    done = sweeps_cli("resume", sweep_dir, "--no-report")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "half-written file(s) the stopped run left" in done.stderr and not list(sweep_dir.rglob("*.tmp-*"))
    trials, _ = check_tables(sweep_dir, 2)
    assert (trials.status == "TERMINATED").all() and (trials.epochs == 6).all()


def _made_as_before(sweep_dir: Path, before: str) -> None:
    """A one-epoch sweep made by a driver in which `before` (Python) first set things as an older version had them."""
    code = f"import sys, sweeps.tuner; {before}; from sweeps.__main__ import main; sys.exit(main())"
    made = subprocess.run(
        [sys.executable, "-c", code, *map(str, run_args(sweep_dir, 1))], capture_output=True, text=True, timeout=300
    )
    assert made.returncode == 0, made.stderr[-3000:]


def test_a_sweep_of_version_0_1_reports_and_resumes(tmp_path):
    """As version 0.1 made them: Ray knew the trials as `train` (folders train_*; `trial` since 0.2), and Ray resumes
    a sweep only under the name it was made with; the Tuner's module was sweeps.run (sweeps.tuner since 0.5), and Ray
    pickled the trials' folder namer under that name into its state, which the report and a resume read back."""
    sweep_dir = tmp_path / "version-0.1"
    _made_as_before(
        sweep_dir,
        "sweeps.tuner.TRIAL_NAME = 'train'; "
        "sys.modules['sweeps.run'] = sweeps.tuner; sweeps.tuner.trial_folder.__module__ = 'sweeps.run'",
    )
    assert [d.name[:6] for d in sweep_dir.iterdir() if d.is_dir()] == ["train_", "train_"]
    assert b"sweeps.run" in (sweep_dir / "tuner.pkl").read_bytes()
    reported = sweeps_cli("report", sweep_dir)
    assert reported.returncode == 0, reported.stderr[-3000:]
    done = sweeps_cli("resume", sweep_dir, "--no-report")
    assert done.returncode == 0, done.stderr[-3000:]
    trials, _ = check_tables(sweep_dir, 2)
    assert (trials.status == "TERMINATED").all()


def _lock_written(sweep_dir: Path) -> bool:
    """The driver holds the sweep's lock: sweep.json is whole, and Ray is about to start."""
    try:
        return bool(json.loads((sweep_dir / LOCK_FILE).read_text()))
    except (OSError, ValueError):
        return False


def test_a_sweep_stopped_while_ray_starts_resumes_and_a_damaged_state_is_named(tmp_path):
    """SIGTERM after the sweep's folder is claimed, while Ray starts (its own handler would end the driver with
    status 15 and no word): the last line and status of any stopped sweep, and `sweeps resume` runs the sweep that
    sweep.json describes, though Ray Tune had saved nothing yet. Copies of that sweep with Ray's state damaged are
    named as such before Ray starts, and nothing in them is touched."""
    made = tmp_path / "whole"
    log = tmp_path / "driver.log"
    driver = start_driver(*run_args(made, 1), log=log)
    wait_for(lambda: _lock_written(made), 120, "the folder to be claimed and locked", driver)
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=120) == 143, log.read_text()[-3000:]
    text = log.read_text()
    assert text.strip().splitlines()[-1] == f"sweeps: interrupted: continue with sweeps resume {made}"
    assert "Traceback" not in text and not list(made.glob("experiment_state-*.json")), text[-3000:]
    assert "0 of 2 trials" in sweeps_cli("status", made).stdout
    report = sweeps_cli("report", made)
    assert report.returncode == 2 and report.stderr == (
        f"sweeps: error: {made}: no trial has started yet, nothing to report: run it with sweeps resume {made}\n"
    )
    done = sweeps_cli("resume", made, "--no-report")
    assert done.returncode == 0, done.stderr[-3000:]
    trials, _ = check_tables(made, 2)
    assert (trials.status == "TERMINATED").all() and (trials.epochs == 1).all()

    damaged = shutil.copytree(tmp_path / "whole", tmp_path / "damaged")
    (path,) = damaged.glob("experiment_state-*.json")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short, as by a full disk or a lost mount
    before = {p: p.read_bytes() for p in damaged.rglob("*") if p.is_file()}
    done = sweeps_cli("resume", damaged, "--no-report", dashboard=True)  # (which would say where, had Ray started)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert f"{damaged}: Ray Tune's state cannot be read" in done.stderr and "Ray dashboard" not in done.stdout
    assert {p: p.read_bytes() for p in damaged.rglob("*") if p.is_file()} == before

    # Before 0.6 Ray uploaded tuner.pkl again in place at each save after a restore: a driver killed then left it
    # empty (as seen) or cut short (told apart in test_experiments). It holds the Tuner as the sweep began, which
    # sweep.json describes: saved again, and the sweep resumes.
    cut = shutil.copytree(tmp_path / "whole", tmp_path / "tuner-empty")
    (cut / "tuner.pkl").write_bytes(b"")
    done = sweeps_cli("resume", cut, "--no-report")
    assert done.returncode == 0 and "2 finished" in done.stdout, done.stderr[-3000:]
    assert tuner_saved_whole(str(cut))  # whole again

    # A finished trial whose results file is lost is named once, not in Ray's warning about every pending trial.
    lost = shutil.copytree(tmp_path / "whole", tmp_path / "lost")
    gone = trial_dirs(lost)[0]
    for name in ("result.json", "progress.csv"):
        (gone / name).unlink(missing_ok=True)
    status = sweeps_cli("status", lost)
    assert status.returncode == 0 and "Failed to fetch metrics" not in status.stderr, status.stderr
    assert status.stderr.count("results file is gone") == 1 and "_".join(gone.name.split("_")[1:3]) in status.stderr

    # The sweep's tables are outputs: damaged or emptied, they are made again from the trials' own files.
    tables = shutil.copytree(tmp_path / "whole", tmp_path / "tables")
    (tables / "trials.parquet").write_bytes(b"")
    (tables / "metrics.parquet").write_bytes(b"PAR1 cut short")
    assert sweeps_cli("status", tables).returncode == 0
    report = sweeps_cli("report", tables)
    assert report.returncode == 0, report.stderr[-3000:]
    for table in ("trials.parquet", "metrics.parquet"):
        made, first = (
            pd.read_parquet(folder / table).drop(columns="path", errors="ignore")
            for folder in (tables, tmp_path / "whole")
        )
        assert made.equals(first), table  # (the trials' paths name each copy's own folders)


def test_ctrl_c_stops_the_sweep_a_second_signal_waits_and_a_second_driver_is_refused(tmp_path):
    """Ctrl-C: Tune saves its state, the tables are written, the last line says how to continue (130); a SIGHUP
    (a closed terminal) during that shutdown is told to wait and loses nothing. While the sweep runs, a second driver
    is refused and status names the one that drives it. (SIGTERM: the Optuna test below; the handler for all three:
    tests/test_signals.py.)"""
    sweep_dir = tmp_path / "interrupted"
    log = tmp_path / "driver.log"
    # Ray streams its processes' lines to the driver: a trial's exit, and a raylet's warning every 10 s where it finds
    # the disk nearly full (as on a CI machine whose disk was 95% full), came after the line below. Here the raylet
    # finds any disk 1% full "nearly full". (test_cluster.py checks that Ray is shut down before that line.)
    nearly_full = {"RAY_local_fs_capacity_threshold": "0.01"}
    args = [a for a in run_args(sweep_dir, 100) if a != "--no-report"]  # long enough for the two commands below
    driver = start_driver(*args, log=log, env=nearly_full)
    wait_for(lambda: mid_training(sweep_dir, 1, 100), 180, "both trials to pass their first checkpoint", driver)
    second_driver = sweeps_cli("resume", sweep_dir, "--no-report")  # refused before Ray starts
    assert second_driver.returncode == 2 and second_driver.stderr.count("\n") == 1, second_driver.stderr
    assert f"is being driven by process {driver.pid} on {socket.gethostname()}" in second_driver.stderr
    assert f"running now, driven by process {driver.pid}" in sweeps_cli("status", sweep_dir).stdout
    driver.send_signal(signal.SIGINT)  # what Ctrl-C sends to the driver
    wait_for(lambda: "Stop signal received" in log.read_text(), 60, "Tune to take the stop", driver)
    driver.send_signal(signal.SIGHUP)
    assert driver.wait(timeout=120) == 130, log.read_text()[-3000:]

    text = log.read_text()
    assert text.strip().splitlines()[-1] == f"sweeps: interrupted: continue with sweeps resume {sweep_dir}"
    assert "sweeps: already stopping (SIGHUP): the state and tables are being saved" in text
    assert "Tuner.restore" not in text and "Traceback" not in text
    assert not (sweep_dir / "report.md").exists(), "an unfinished sweep's report would read as a finished one's"
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 2 and (trials.epochs < 100).all() and (trials.epochs >= 3).all()

    # `sweeps status` reads the files alone: both trials part-way, with their epochs and the time left.
    state = json.loads(sweeps_cli("status", sweep_dir, "--json").stdout)
    assert state["total"] == 2 and state["counts"]["running"] == 2 and not state["done"] and not state["driver"]
    assert sorted(r["epoch"] for r in state["running"]) == sorted(trials.epochs) and state["left_s"] > 0
    watcher = start_driver("status", sweep_dir, "--watch", "0.2", log=tmp_path / "watch.log")
    wait_for(
        lambda: (tmp_path / "watch.log").read_text().count("running") >= 4, 120, "the watch to print twice", watcher
    )
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(timeout=90) == 0  # leaving the watch is not a failure
    watcher = start_driver("status", sweep_dir, "--watch", "0.2", log=tmp_path / "watch.log")
    wait_for(lambda: (tmp_path / "watch.log").read_text().count("running") >= 2, 120, "the watch to print", watcher)
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(timeout=90) == 143  # ended by a job's time limit: a stop, not a user leaving

    done = sweeps_cli("resume", sweep_dir, "--no-report")
    assert done.returncode == 0, done.stderr[-3000:]
    trials, _ = check_tables(sweep_dir, 2)  # every epoch recorded once
    assert (trials.status == "TERMINATED").all() and (trials.epochs == 100).all()


def test_optunas_study_survives_sigterm_and_resume(tmp_path):
    """The journal in the sweep folder goes on where it stopped: after the resume it holds every trial once, with
    the values the tables hold, and Optuna's own loader reads it. The sweep is stopped as `timeout`, a batch
    scheduler or Kubernetes stops it (SIGTERM, which once aborted the driver in Ray's own handler: exit 134, no
    tables): as Ctrl-C does, with the shell's status for SIGTERM (143)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    sweep_dir = tmp_path / "searched"
    args = ["run", "synthetic", "--storage", tmp_path, "--name", sweep_dir.name, "--search", "optuna", "--seed", "5"]
    options = ["--num-samples", "4", "--max-concurrent", "1", "--epochs", "20", "--no-early-stop", "--no-report"]
    driver = start_driver(*args, *options, "--set", "n=1000", log=tmp_path / "driver.log")
    # The first trial done, the second part-way: the job's time is up.
    wait_for(lambda: len(trial_dirs(sweep_dir)) == 2 and epochs_reported(trial_dirs(sweep_dir)[-1]), 240, "a 2nd trial")
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=120) == 143, (tmp_path / "driver.log").read_text()[-3000:]
    last = (tmp_path / "driver.log").read_text().strip().splitlines()[-1]
    assert last == f"sweeps: interrupted: continue with sweeps resume {sweep_dir}"

    done = sweeps_cli("resume", sweep_dir, "--no-report")
    assert done.returncode == 0, done.stderr[-3000:]
    trials, _ = check_tables(sweep_dir, 4)
    journal = JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    study = optuna.load_study(study_name=sweep_dir.name, storage=journal)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(study.trials) == 4  # the interrupted trial finished under its own number
    assert sorted(t.params["lr"] for t in complete) == pytest.approx(sorted(trials["config/lr"]))
    assert sorted(t.value for t in complete) == pytest.approx(sorted(trials["best_val_mse"]))
