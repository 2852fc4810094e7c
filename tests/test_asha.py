"""ASHA across a resume (sweeps.asha): the rungs hold what the trials reported before it, as they did before it.

Real trials of a real sweep, read back as Tune restores them (ExperimentAnalysis), added to a fresh scheduler as a
resume adds them; Ray's own ASHAScheduler alongside shows what went wrong without the replay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest
from ray.tune import ExperimentAnalysis
from ray.tune.result import EXPR_RESULT_FILE
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from sweeps.asha import ResumableASHA, past_results
from tests.sweeping import TWO_SMALL_TRIALS, sweeps_cli

pytestmark = pytest.mark.ray  # starts Ray: not in `make test-fast`


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    """The two trials of a finished sweep of 2 epochs, the better first (by validation MSE after epoch 1)."""
    storage = tmp_path_factory.mktemp("asha")
    done = sweeps_cli("run", "synthetic", "--storage", storage, "--name", "two", "--no-report", *TWO_SMALL_TRIALS)
    assert done.returncode == 0, done.stderr[-3000:]
    restored = ExperimentAnalysis(str(storage / "two")).trials
    return sorted(restored, key=lambda trial: first_epoch(trial)["val_mse"])


def first_epoch(trial) -> dict:
    return past_results(trial)[0]


def resumed(scheduler_class, trials):
    """A scheduler as a resume makes it: rungs at epochs 1 and 4, every trial of the sweep added back."""
    scheduler = scheduler_class(time_attr="epoch", max_t=10, grace_period=1, reduction_factor=4)
    scheduler.set_search_properties("val_mse", "min")
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    return scheduler


def test_a_resumed_trial_is_not_judged_again_at_a_rung_it_passed(trials):
    better, worse = trials
    after_resume = {"epoch": 3, "val_mse": first_epoch(worse)["val_mse"]}
    scheduler = resumed(ResumableASHA, trials)
    scheduler.on_trial_result(None, better, {"epoch": 3, "val_mse": 1e-6})  # far better since: no matter
    assert scheduler.on_trial_result(None, worse, after_resume) == TrialScheduler.CONTINUE
    # Ray's own: the rung of epoch 1 empty again, the first result after the resume (another trial's, two epochs
    # on) becomes its bar, and the second trial is stopped on it.
    plain = resumed(ASHAScheduler, trials)
    plain.on_trial_result(None, better, {"epoch": 3, "val_mse": 1e-6})
    assert plain.on_trial_result(None, worse, after_resume) == TrialScheduler.STOP


def test_a_new_trial_meets_the_bar_the_trials_before_the_resume_set(trials):
    new = SimpleNamespace(trial_id="new", last_result={})
    worse_than_both = {"epoch": 1, "val_mse": 2 * max(first_epoch(t)["val_mse"] for t in trials)}
    scheduler = resumed(ResumableASHA, [*trials, new])
    assert scheduler.on_trial_result(None, new, worse_than_both) == TrialScheduler.STOP
    plain = resumed(ASHAScheduler, [*trials, new])
    assert plain.on_trial_result(None, new, worse_than_both) == TrialScheduler.CONTINUE  # nobody to compare with


def test_a_results_line_cut_short_by_a_killed_driver_is_left_out(tmp_path):
    lines = [json.dumps({"epoch": 1, "val_mse": 0.5}), json.dumps({"epoch": 2, "val_mse": 0.4}), '{"epoch": 3, "va']
    (tmp_path / EXPR_RESULT_FILE).write_text("\n".join(lines))
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(tmp_path))
    assert [r["epoch"] for r in past_results(SimpleNamespace(storage=storage))] == [1, 2]


def test_a_trial_whose_results_file_is_gone_is_judged_on_its_new_results(trials, tmp_path):
    better, worse = trials
    results = Path(worse.storage.trial_fs_path) / EXPR_RESULT_FILE
    shutil.move(results, tmp_path / EXPR_RESULT_FILE)
    try:
        scheduler = resumed(ResumableASHA, trials)  # no error
        # The rung holds the other trial alone (its validation MSE far below 1: seeded data and weights): the
        # worse trial's new result is compared with it.
        assert scheduler.on_trial_result(None, worse, {"epoch": 3, "val_mse": 1.0}) == TrialScheduler.STOP
    finally:
        shutil.move(tmp_path / EXPR_RESULT_FILE, results)
