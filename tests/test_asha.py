"""ASHA across a resume (sweeps.asha): the rungs hold what the trials reported before it, as they did before it.

Real trials of a real sweep, read back as Tune restores them (ExperimentAnalysis), added to a fresh scheduler as a
resume adds them; Ray's own ASHAScheduler alongside shows what went wrong without the replay."""

from __future__ import annotations

import json
import math
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.fs
import pytest
from ray.tune import ExperimentAnalysis
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.result import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from sweeps import sweep
from sweeps.__main__ import main
from sweeps.asha import PromotionASHA, ResumableASHA, past_results
from sweeps.hyperband import ResumableHyperBand
from sweeps.schedulers import SCHEDULERS
from sweeps.tuner import ProgressCsv, ResultJson
from tests.sweeping import (
    TWO_SMALL_TRIALS,
    checkpoint_dirs,
    epochs_reported,
    kill_driver,
    results_reported,
    start_driver,
    sweeps_cli,
    trial_dirs,
    wait_for,
)

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


@pytest.mark.parametrize("lost", ["the-last-line", "the-whole-file"])
def test_epochs_missing_from_a_trials_results_file_come_from_its_checkpoint(trials, tmp_path, lost):
    """A driver killed after a trial's checkpoint but before it logged that epoch's result, or a results file lost:
    the scheduler sees what the trial's newest checkpoint holds, which is where the trial goes on from."""
    _, worse = trials
    results = Path(worse.storage.trial_fs_path) / EXPR_RESULT_FILE
    shutil.copy(results, tmp_path / EXPR_RESULT_FILE)
    logged = past_results(worse)
    try:
        if lost == "the-whole-file":
            results.unlink()
        else:
            results.write_text(results.read_text().splitlines()[0] + "\n")
        replayed = past_results(worse)
        assert [r["epoch"] for r in replayed] == [1, 2]
        assert [r["best_val_mse"] for r in replayed] == pytest.approx([r["best_val_mse"] for r in logged])
        # Both trials' first epochs at the rung, as before the resume: the worse is not judged again there.
        scheduler = resumed(ResumableASHA, trials)
        assert sorted(scheduler._brackets[0]._rungs[-1][1]) == sorted(t.trial_id for t in trials)
    finally:
        shutil.copy(tmp_path / EXPR_RESULT_FILE, results)


class LoggedTrial:
    """What Tune's result loggers see of a trial: its folder on the driver and on the sweep's storage, and whether it
    goes on from a checkpoint."""

    def __init__(self, driver_folder: Path, storage_folder: Path, checkpoint=None):
        self.config, self.local_path, self.checkpoint = {}, str(driver_folder), checkpoint
        self.storage = SimpleNamespace(
            storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(storage_folder)
        )
        self.init_local_path()

    def init_local_path(self):
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


def log_epochs(logger, trial: LoggedTrial, epochs: list[int]) -> list[int]:
    """The epochs in the trial's file on the driver once the logger has logged these."""
    logger.log_trial_start(trial)
    for epoch in epochs:
        logger.log_trial_result(epoch, trial, {"epoch": epoch, "val_mse": 1 / epoch})
    logger.log_trial_end(trial)
    if isinstance(logger, JsonLoggerCallback):
        return [r["epoch"] for r in results_reported(trial.local_path)]
    return pd.read_csv(Path(trial.local_path, EXPR_PROGRESS_FILE)).epoch.tolist()


@pytest.mark.parametrize(("ours", "rays"), [(ResultJson, JsonLoggerCallback), (ProgressCsv, CSVLoggerCallback)])
def test_a_trial_going_on_from_a_checkpoint_keeps_the_results_its_driver_logged(tmp_path, ours, rays):
    """A trial paused at a rung (or whose worker was killed) goes on from its checkpoint in the same driver: the
    storage's copy of its results file is as old as the last sync (here: epoch 1 only). Ray's logger copies it over
    the driver's; ours keeps the driver's. A new driver (a resume) has no file of its own: it takes storage's."""
    stored = tmp_path / "storage"
    assert log_epochs(rays(), LoggedTrial(stored, stored), [1]) == [1]
    for logger_class, kept in [
        (ours, [1, 2, 3]),
        (rays, [1, 3]),
    ]:  # (Ray's loses epoch 2: once Ray mends it, so can we)
        logger, driver = logger_class(), tmp_path / logger_class.__name__
        assert log_epochs(logger, LoggedTrial(driver, stored), [1, 2]) == [1, 2]
        assert log_epochs(logger, LoggedTrial(driver, stored, checkpoint="epoch 2"), [3]) == kept, logger_class
        resumed = tmp_path / f"{logger_class.__name__}-resumed"
        assert log_epochs(logger_class(), LoggedTrial(resumed, stored, checkpoint="epoch 1"), [2]) == [1, 2]


class Controller:
    """What a scheduler sees of Tune's controller, for trials that are plain records: their states, whether the
    search has more to give, and the stops the scheduler asks for."""

    def __init__(self, trials, search_finished=True):
        self.trials, self.stopped, self._tune_controller = trials, [], self
        self.search_alg = SimpleNamespace(is_finished=lambda: search_finished)

    def get_trials(self):
        return self.trials

    def get_live_trials(self):
        return [t for t in self.trials if not t.is_finished()]

    def stop_trial(self, trial):
        trial.status = "TERMINATED"
        self.stopped.append(trial.trial_id)

    def _mark_trial_to_checkpoint(self, trial):
        pass


class Trial(SimpleNamespace):
    PAUSED, PENDING, RUNNING, TERMINATED = "PAUSED", "PENDING", "RUNNING", "TERMINATED"

    def __init__(self, trial_id, status="RUNNING", last_result=None):
        super().__init__(trial_id=trial_id, status=status, last_result=last_result or {})

    def is_finished(self):
        return self.status == "TERMINATED"

    def set_status(self, status):
        self.status = status


def promotion(trials, max_t=16):
    """Rungs at epochs 1 and 4 (grace 1, reduction factor 4), the budget at 16."""
    scheduler = PromotionASHA(time_attr="epoch", max_t=max_t, grace_period=1, reduction_factor=4)
    scheduler.set_search_properties("best_val_mse", "min")
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    return scheduler


def at(epoch, value):
    return {"epoch": epoch, "best_val_mse": value}


def test_the_command_lines_scheduler_names_are_the_schedulers():
    assert tuple(SCHEDULERS) == tuple(sweep.SCHEDULERS)  # the command line lists them without importing Ray


def test_the_first_trial_at_a_rung_waits_where_rays_asha_lets_it_pass():
    first = Trial("a")
    assert promotion([first]).on_trial_result(None, first, at(1, 0.9)) == TrialScheduler.PAUSE
    plain = ASHAScheduler(time_attr="epoch", max_t=16, grace_period=1, reduction_factor=4)
    plain.set_search_properties("best_val_mse", "min")
    plain.on_trial_add(None, first)
    assert plain.on_trial_result(None, first, at(1, 0.9)) == TrialScheduler.CONTINUE  # the first-arrival pass


def test_once_the_rung_holds_four_results_its_best_goes_on_and_the_rest_wait():
    trials = [Trial(name) for name in "abcd"]
    scheduler = promotion(trials)
    controller = Controller(trials, search_finished=False)
    for trial, value in zip(trials[:3], (0.5, 0.2, 0.7)):
        assert scheduler.on_trial_result(controller, trial, at(1, value)) == TrialScheduler.PAUSE
        trial.status = "PAUSED"
    assert scheduler.choose_trial_to_run(controller) is None  # 3 results: nobody is in the top quarter of 4 yet
    assert scheduler.on_trial_result(controller, trials[3], at(1, 0.6)) == TrialScheduler.PAUSE
    trials[3].status = "PAUSED"
    assert scheduler.choose_trial_to_run(controller) is trials[1]  # the best of the four, resumed from its rung
    assert scheduler.on_trial_result(controller, trials[1], at(2, 0.1)) == TrialScheduler.CONTINUE
    trials[1].status = "RUNNING"
    assert scheduler.choose_trial_to_run(controller) is None and controller.stopped == []  # it may be beaten


def test_a_trial_that_arrives_in_the_top_quarter_goes_on_without_waiting():
    trials = [Trial(name) for name in "abcd"]
    scheduler = promotion(trials)
    for trial, value in zip(trials[:3], (0.5, 0.4, 0.7)):
        scheduler.on_trial_result(None, trial, at(1, value))
    assert scheduler.on_trial_result(None, trials[3], at(1, 0.1)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trials[3], at(16, 0.05)) == TrialScheduler.STOP  # its budget


def test_when_nothing_else_can_run_the_lowest_rung_promotes_its_best_and_stops_the_rest():
    trials = [Trial(name) for name in "abc"]
    scheduler = promotion(trials)
    controller = Controller(trials, search_finished=True)
    for trial, value in zip(trials, (0.5, 0.2, 0.7)):
        scheduler.on_trial_result(controller, trial, at(1, value))
        trial.status = "PAUSED"
    assert scheduler.choose_trial_to_run(controller) is trials[1]  # fewer than four will ever come: the best goes on
    assert controller.stopped == ["a", "c"]
    assert scheduler.on_trial_result(controller, trials[1], at(2, 0.1)) == TrialScheduler.CONTINUE


def test_once_no_trial_is_left_to_start_a_rungs_leader_goes_on_without_waiting_for_the_rung_to_fill():
    """The sweep's best would otherwise wait at its last rung, where it is alone, while a core idles."""
    leader, runner, loser = Trial("a"), Trial("b"), Trial("c")
    trials = [leader, runner, loser, *(Trial(name, status="TERMINATED") for name in "defgh")]
    scheduler = promotion(trials)
    controller = Controller(trials, search_finished=False)
    for trial, value in zip(trials, (0.1, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)):  # rung 1 holds 8: a and b go on
        scheduler.on_trial_result(controller, trial, at(1, value))
    assert scheduler.choose_trial_to_run(controller) is None  # (a, b and c run: it has seen 3 trial slots)
    loser.status = "PAUSED"
    assert scheduler.on_trial_result(controller, leader, at(4, 0.05)) == TrialScheduler.PAUSE  # alone at rung 4
    leader.status = "PAUSED"
    runner.last_result = at(2, 0.15)  # below rung 4: it may still overtake a there
    pending = Trial("i", status="PENDING")
    controller.trials.append(pending)
    assert scheduler.choose_trial_to_run(controller) is pending  # a trial to start: the leader waits
    controller.trials.remove(pending)
    controller.search_alg.is_finished = lambda: True
    assert scheduler.choose_trial_to_run(controller) is leader  # nothing to start, 2 of 3 slots empty: it goes on
    assert controller.stopped == ["c"]  # no trial can reach rung 1 any more: c will not be promoted
    assert scheduler.on_trial_result(controller, leader, at(5, 0.04)) == TrialScheduler.CONTINUE


def test_once_nothing_can_reach_the_rungs_only_their_best_go_on():
    trials = [Trial(name) for name in "abcdefgh"]
    scheduler = promotion(trials)
    controller = Controller(trials, search_finished=True)
    for trial, value in zip(trials, (0.1, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)):  # a and b go on from rung 1
        scheduler.on_trial_result(controller, trial, at(1, value))
        trial.status = "PAUSED" if trial.trial_id != "h" else "TERMINATED"  # h: diverged, say
    for trial, value in ((trials[1], 0.3), (trials[0], 0.05)):  # b waits at rung 4 alone, then a beats it there
        assert scheduler.on_trial_result(controller, trial, at(4, value)) == TrialScheduler.PAUSE
    assert scheduler.choose_trial_to_run(controller) is trials[0]
    assert controller.stopped == [*"cdefg", "b"]  # rung 1's waiting, then rung 4's b, in one go


def test_while_the_search_has_more_a_waiting_rung_stops_nobody():
    """A concurrency limit holds new trials back while these wait: the best goes on, the others keep their chance."""
    trials = [Trial(name) for name in "ab"]
    scheduler = promotion(trials)
    controller = Controller(trials, search_finished=False)
    for trial, value in zip(trials, (0.5, 0.2)):
        scheduler.on_trial_result(controller, trial, at(1, value))
        trial.status = "PAUSED"
    assert scheduler.choose_trial_to_run(controller) is trials[1] and controller.stopped == []


def test_a_nan_ranks_last():
    trials = [Trial(name) for name in "abcd"]
    scheduler = promotion(trials)
    for trial, value in zip(trials, (float("nan"), 0.5, 0.6, 0.7)):
        scheduler.on_trial_result(None, trial, at(1, value))
    assert scheduler._top(1) == ["b"]


def test_after_a_resume_a_trial_that_waited_at_a_rung_waits_again(trials):
    """Real trials of 2 epochs: at a resume with rungs at 1 and 2, both stand at the rung of epoch 2."""
    restored = [Trial(t.trial_id, status="PENDING", last_result=t.last_result) for t in trials]
    for trial, real in zip(restored, trials):
        trial.storage = real.storage
    scheduler = PromotionASHA(time_attr="epoch", max_t=8, grace_period=2, reduction_factor=4)
    scheduler.set_search_properties("val_mse", "min")
    for trial in restored:
        scheduler.on_trial_add(None, trial)
    assert [t.status for t in restored] == ["PAUSED", "PAUSED"]  # Tune would have started them again
    assert sorted(scheduler._rungs[2]) == sorted(t.trial_id for t in trials)
    controller = Controller(restored, search_finished=True)
    better, worse = sorted(restored, key=lambda t: past_results(t)[1]["val_mse"])
    assert scheduler.choose_trial_to_run(controller) is better  # on what they reported before the resume
    assert controller.stopped == [worse.trial_id]


PROMOTION_SWEEP = ["--epochs", "4", "--grace-period", "1", "--checkpoint-every", "4", "--scheduler", "promotion",
                   "--reduction-factor", "4", "--set", "n=1000", "--set", "batch_size=64", "--set", "grad_clip=1", "--set", "lr=0.001,0.01",
                   "--set", "hidden_size=10,25", "--no-report"]  # fmt: skip


def check_only_leaders_went_on(sweep_dir) -> pd.DataFrame:
    """4 trials, a rung at epoch 1, a budget of 4: the best at the rung ran on, whoever came first; any other that ran
    on led the rung when it went on (a trial slot would have stayed empty: PromotionASHA); the rest were stopped
    there."""
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert (trials.status == "TERMINATED").all() and set(trials.epochs) <= {1, 4}, trials[["trial_id", "epochs"]]
    assert (trials.epochs == 1).sum() >= 2 and trials.stopped_early.sum() == (trials.epochs == 1).sum()
    at_rung = {}  # trial id -> (when it reported epoch 1, its value there)
    for folder in trial_dirs(sweep_dir):
        first = next(r for r in results_reported(folder) if r["epoch"] == 1)
        at_rung[first["trial_id"]] = (first["timestamp"], first["val_mse"])
    epochs = trials.set_index("trial_id").epochs
    assert epochs[min(at_rung, key=lambda t: at_rung[t][1])] == 4
    for went_on in epochs.index[epochs == 4]:
        arrived, value = at_rung[went_on]
        assert all(other >= value for when, other in at_rung.values() if when < arrived), (went_on, at_rung)
    return trials


def test_a_sweep_by_promotion_runs_one_trial_on_from_a_rung_of_four(tmp_path):
    """Each trial waits at the rung (paused, from its checkpoint of that epoch) until the rung holds 4 results, or a
    trial slot would stay empty."""
    done = sweeps_cli("run", "synthetic", *PROMOTION_SWEEP, "--storage", tmp_path, "--name", "p")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = check_only_leaders_went_on(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "sweep.json").read_text())["sweep"]["scheduler"] == "promotion"
    assert "0 waiting" in done.stdout
    metrics = pd.read_parquet(tmp_path / "p" / "metrics.parquet")
    assert metrics.resumed.dtype == bool and set(metrics.epoch[metrics.resumed]) <= {2}  # (the 4th may not wait)
    assert main(["report", str(tmp_path / "p")]) == 0
    report = (tmp_path / "p" / "report.md").read_text()
    assert "Early stopping: ASHA by promotion" in report and "rungs at epochs 1, each passing 1/4" in report
    stopped = int(trials.stopped_early.sum())
    assert f"It stopped {stopped} trials: {3 * stopped} epochs and about " in report  # each at its epoch 1 of 4


def test_trials_waiting_at_a_rung_survive_a_killed_driver(tmp_path):
    sweep_dir = tmp_path / "k"
    driver = start_driver("run", "synthetic", *PROMOTION_SWEEP, "--storage", tmp_path, "--name", "k")

    def three_at_the_rung():  # at least two of them waiting there, and no trial between its checkpoint and its log
        folders = trial_dirs(sweep_dir)
        logged = [1 in epochs_reported(d) for d in folders]
        # (A driver killed there leaves that epoch out of Ray's log for good: the sweep's tables have it, from the
        # checkpoint, but the checks below read the log.)
        return sum(logged) >= 3 and not any(checkpoint_dirs(d) and not seen for d, seen in zip(folders, logged))

    wait_for(three_at_the_rung, 240, "three trials at the rung", driver)
    kill_driver(driver)
    done = sweeps_cli("resume", sweep_dir, "--no-report")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = check_only_leaders_went_on(sweep_dir)
    for folder in trial_dirs(sweep_dir):  # the rung's epoch trained once: the waiting resumed from its checkpoint
        assert epochs_reported(folder).count(1) == 1, folder.name
    assert json.loads((sweep_dir / "sweep.json").read_text())["sweep"]["scheduler"] == "promotion"
    assert len(trials) == 4


def test_a_trial_that_diverges_at_a_rung_is_not_paused():
    trial = Trial("a")
    scheduler = promotion([trial])
    diverged = {**at(1, float("nan")), "diverged": True}
    assert scheduler.on_trial_result(None, trial, diverged) == TrialScheduler.CONTINUE  # it ends itself
    assert scheduler._rungs[1] == {"a": -math.inf}  # and ranks last at the rung


# HyperBand, budget 4, a factor of 2: the four trials fill its most aggressive bracket, with milestones at 1 and 2.
HYPERBAND_SWEEP = ["--epochs", "4", "--checkpoint-every", "4", "--scheduler", "hyperband", "--reduction-factor", "2",
                   "--set", "n=1000", "--set", "batch_size=64", "--set", "grad_clip=1", "--set", "lr=0.001,0.01",
                   "--set", "hidden_size=10,25", "--no-report"]  # fmt: skip


def check_halvings(sweep_dir) -> pd.DataFrame:
    """The bracket's halvings as HyperBand makes them, whoever arrived first: the best half of the four at epoch 1 went
    on to 2, the better of those two to the budget; no epoch trained twice. (Values from the sweep's table, which
    has every epoch: a driver killed between a trial's checkpoint and its result leaves that result out of Ray's log.)"""
    trials = pd.read_parquet(sweep_dir / "trials.parquet").set_index("trial_id")
    assert (trials.status == "TERMINATED").all() and sorted(trials.epochs) == [1, 1, 2, 4], trials.epochs
    for folder in trial_dirs(sweep_dir):
        reported = epochs_reported(folder)
        assert len(reported) == len(set(reported)), (folder.name, reported)
    metrics = pd.read_parquet(sweep_dir / "metrics.parquet").sort_values("epoch")
    metrics["best"] = metrics.groupby("trial_id").val_mse.cummin()  # the running best, which HyperBand ranks on
    at = metrics.set_index(["epoch", "trial_id"]).best
    went_on = at[1].nsmallest(2).index
    assert set(went_on) == set(trials.index[trials.epochs >= 2]), at
    assert trials.epochs[at[2][went_on].idxmin()] == 4, at
    return trials


def test_a_sweep_by_hyperband_halves_its_bracket_at_each_milestone(tmp_path):
    done = sweeps_cli("run", "synthetic", *HYPERBAND_SWEEP, "--storage", tmp_path, "--name", "h")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_halvings(tmp_path / "h")
    assert json.loads((tmp_path / "h" / "sweep.json").read_text())["sweep"]["scheduler"] == "hyperband"
    assert "early stopping: hyperband, rungs at epochs 1, 2" in done.stdout


@pytest.mark.parametrize(
    "stop, when",
    [("kill", "three-at-1"), ("kill", "one-at-2"), ("ctrl-c", "three-at-1")],
    ids=["killed-three-at-1", "killed-after-the-first-halving", "ctrl-c-three-at-1"],
)
def test_a_hyperband_sweep_stopped_mid_bracket_resumes_to_the_same_halvings(tmp_path, stop, when):
    sweep_dir = tmp_path / "k"
    driver = start_driver("run", "synthetic", *HYPERBAND_SWEEP, "--storage", tmp_path, "--name", "k")
    epoch, trials = {"three-at-1": (1, 3), "one-at-2": (2, 1)}[when]
    wait_for(lambda: sum(epoch in epochs_reported(d) for d in trial_dirs(sweep_dir)) >= trials, 240, when, driver)
    if stop == "kill":
        kill_driver(driver)
    else:
        driver.send_signal(signal.SIGINT)  # what Ctrl-C sends to the driver
        assert driver.wait(timeout=120) == 130
    done = sweeps_cli("resume", sweep_dir, "--no-report")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_halvings(sweep_dir)


class BracketTrial:
    """A trial as HyperBand keeps it (a dict key), with its results file in `folder`."""

    PAUSED, PENDING, RUNNING, TERMINATED, ERROR = "PAUSED", "PENDING", "RUNNING", "TERMINATED", "ERROR"
    is_saving, checkpoint = False, None

    def __init__(self, folder: Path, created: int, status: str, values: dict):
        self.trial_id, self.experiment_tag, self.status = f"t{created}", f"{created}_x", status
        folder.mkdir()
        results = [{"epoch": epoch, "best_val_mse": value} for epoch, value in values.items()]
        (folder / EXPR_RESULT_FILE).write_text("".join(json.dumps(r) + "\n" for r in results))
        self.storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(folder))
        self.last_result = results[-1] if results else {}

    def is_finished(self):
        return self.status in (self.TERMINATED, self.ERROR)


class StatusController(Controller):
    def _set_trial_status(self, trial, status):
        trial.status = status


def test_a_resumed_hyperband_bracket_gets_back_its_halvings_and_its_waiting_trials(tmp_path):
    """Budget 4, a factor of 2: one bracket of four, milestones 1 and 2. The driver died after the halving at 1
    (a and b went on; d was stopped and recorded so; c was stopped, but Ray's record still calls it paused) while a and
    b waited at 2. Tune adds them back newest result first, Ray's HyperBand would deal them into brackets in that
    order and run c again."""
    made = {
        "d": BracketTrial(tmp_path / "d", 0, "TERMINATED", {1: 0.4}),
        "b": BracketTrial(tmp_path / "b", 1, "PENDING", {1: 0.2, 2: 0.15}),
        "c": BracketTrial(tmp_path / "c", 2, "PENDING", {1: 0.3}),
        "a": BracketTrial(tmp_path / "a", 3, "PENDING", {1: 0.1, 2: 0.12}),
    }
    scheduler = ResumableHyperBand(time_attr="epoch", max_t=4, reduction_factor=2)
    scheduler.set_search_properties("best_val_mse", "min")
    controller = StatusController(list(made.values()))
    for name in "abcd":  # in Tune's order, newest result first, not the search's
        scheduler.on_trial_add(controller, made[name])
    chosen = scheduler.choose_trial_to_run(controller)
    ((bracket, _),) = set(scheduler._trial_info.values())
    assert [t.trial_id for t in bracket._all_trials] == ["t0", "t1", "t2", "t3"]  # the order the search made them
    assert controller.stopped == ["t2", "t1"]  # c, as the halving at 1 did; then b, at 2, once both had arrived
    assert chosen is made["a"] and bracket._cumul_r == 4
    assert ResumableHyperBand.milestones(4, 2) == [1, 2, 4] and ResumableHyperBand.milestones(100, 3)[-1] == 100
