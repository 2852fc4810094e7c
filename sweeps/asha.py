"""ASHA that survives a resume, and ASHA without the first arrivals' free pass.

`asha`: Ray's ASHAScheduler, given back on a resume what each trial reported before it.

Ray saves no scheduler state with a sweep (TuneController.__getstate__ leaves `_scheduler_alg` out, Ray 2.60): a
resumed sweep's ASHA starts with empty rungs. A resumed trial is then judged at a rung it passed long ago against
the first value recorded there since, another trial's result hundreds of epochs later (seen in the synthetic grid: a
trial stopped at epoch 421, its first epoch after the resume, against another's epoch 561), and the trials still to
start face only the values recorded since the resume. Here each trial's logged results are replayed as Tune adds
the trial back, so the rungs hold what they held.
"""

from __future__ import annotations

import json

from ray.tune.result import EXPR_RESULT_FILE
from ray.tune.schedulers import ASHAScheduler

from sweeps import checkpoints
from sweeps.experiments import EXPERIMENTS, score


class ResumableASHA(ASHAScheduler):
    pauses = False

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if self._time_attr not in (trial.last_result or {}):
            return  # a new trial: nothing to replay (and no file to read)
        stopped = self._num_stopped  # (the decisions below were taken before the resume: not counted again)
        for result in past_results(trial):
            # Records the result at the rung its epoch reached, as ASHA did then.
            self.on_trial_result(tune_controller, trial, result)
        self._num_stopped = stopped


def parse_results(text: str) -> list[dict]:
    """The results in the text of a trial's result.json (Ray's log of what it reported), oldest first, repeats
    included; a line cut short by a killed driver is left out."""
    results = []
    for line in text.splitlines():
        try:
            results.append(json.loads(line))
        except ValueError:
            continue
    return results


def past_results(trial) -> list[dict]:
    """The results the trial reported, oldest first: those in its results file (on its storage: a folder, S3...), then
    any epochs its newest checkpoint holds beyond them. The driver logs a result after the trial has written the
    checkpoint of that epoch: a driver killed in between leaves the epoch out of the file, though the trial goes on
    from that checkpoint (checkpoints.restore), and a scheduler that did not see it would judge the trial an epoch
    late, or let it pass a rung unjudged."""
    storage = trial.storage
    path = f"{storage.trial_fs_path}/{EXPR_RESULT_FILE}"
    try:
        with storage.storage_filesystem.open_input_stream(path) as stream:
            text = stream.read().decode()
    except FileNotFoundError:
        text = ""  # lost with its folder: the trial is judged on what its checkpoint holds and its new results
    results = parse_results(text)
    logged = max((r["epoch"] for r in results if "epoch" in r), default=0)
    return results + [r for r in _checkpointed(trial) if r["epoch"] > logged]


def _checkpointed(trial) -> list[dict]:
    """Every epoch the trial's newest readable checkpoint records, with the running best the trial reports."""
    if getattr(trial, "checkpoint", None) is None:
        return []
    try:
        history = checkpoints.read_newest_history(trial.checkpoint).to_dict("records")
    except checkpoints.CheckpointError:
        return []  # the trial's own output names it when it goes on
    experiment = EXPERIMENTS[trial.config["experiment"]]
    return [{**row, experiment.running_best: best} for row, best in zip(history, experiment.running_bests(history))]


def rank_value(scheduler, result: dict) -> float:
    """A result's place in a scheduler's ranking: larger is better; a NaN (diverged) ranks last."""
    return score(result[scheduler._metric], scheduler._mode)


def stop_and_record(tune_controller, trial) -> None:
    """Stops a trial that waits (paused, no worker) and records its new status in the sweep's state. Ray records the
    new status of a trial only when it stops one with a worker (TuneController._schedule_trial_stop returns before
    _mark_trial_to_checkpoint, Ray 2.60): without this, the state would keep the trial PAUSED, and a resume would
    run it again."""
    tune_controller.stop_trial(trial)
    tune_controller._tune_controller._mark_trial_to_checkpoint(trial)


class PromotionASHA(ResumableASHA):
    """ASHA by promotion (Li et al. 2020, syne-tune's `type="promotion"`): a trial that reaches a rung pauses there
    (from the checkpoint it writes at every rung) until it ranks in the top 1/reduction_factor of the results the rung
    holds. Ray's ASHA judges a trial on arrival, so the first to reach a rung passes it unopposed (ray-project/ray#4401):
    here no trial goes on before the rung holds reduction_factor results. Once the search has no more trials to start
    and a trial slot would stay empty, a rung's leader goes on without waiting for the rung to fill (the sweep's best
    would otherwise wait at its last rung while a core idles), and the trials waiting at a rung no result can reach any
    more are stopped, but for its best. While the search has more but a concurrency limit holds it back (every live
    trial waits), the lowest rung promotes its best."""

    pauses = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._rungs: dict[int, dict] = dict(self._brackets[0]._rungs)  # rung -> {trial id: value}, Ray's own dicts
        self._promoted: dict[int, set] = {rung: set() for rung in self._rungs}
        self._waiting: dict[str, int] = {}  # trial id -> the rung it waits at
        self._most_running = 0

    def _rank_value(self, result: dict) -> float:
        return rank_value(self, result)

    def _top(self, rung: int, at_least: int = 0) -> list[str]:
        """The trials in the top 1/reduction_factor of the rung's results (at least `at_least` of them), best first."""
        recorded = self._rungs[rung]
        count = max(at_least, len(recorded) // self._reduction_factor)
        return sorted(recorded, key=recorded.get, reverse=True)[:count]

    def on_trial_add(self, tune_controller, trial) -> None:
        ASHAScheduler.on_trial_add(self, tune_controller, trial)
        past = past_results(trial) if self._time_attr in (trial.last_result or {}) else []
        for result in past:  # a resumed trial: its rungs' results, and where it went on from
            if result.get(self._time_attr) in self._rungs and self._metric in result:
                self._rungs[result[self._time_attr]][trial.trial_id] = self._rank_value(result)
        epochs = [r[self._time_attr] for r in past if self._time_attr in r]
        for rung, promoted in self._promoted.items():
            if any(epoch > rung for epoch in epochs):
                promoted.add(trial.trial_id)
        last = epochs[-1] if epochs else None
        if last in self._rungs and trial.trial_id not in self._promoted[last] and not trial.is_finished():
            self._waiting[trial.trial_id] = last  # it waited there when the driver stopped: it waits again
            trial.set_status(trial.PAUSED)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get(self._time_attr)
        if epoch is None or self._metric not in result:
            return self.CONTINUE
        if epoch >= self._max_t:
            return self.STOP
        if epoch not in self._rungs or trial.trial_id in self._promoted[epoch]:
            return self.CONTINUE
        self._rungs[epoch][trial.trial_id] = self._rank_value(result)
        if result.get("diverged"):
            return self.CONTINUE  # the trial ends itself on this result: nothing to pause
        if trial.trial_id in self._top(epoch):
            self._promoted[epoch].add(trial.trial_id)
            return self.CONTINUE
        self._waiting[trial.trial_id] = epoch
        return self.PAUSE

    def choose_trial_to_run(self, tune_controller):
        trials = tune_controller.get_trials()
        paused = self._paused(trials)
        for rung in sorted(self._rungs, reverse=True):  # the furthest first: the sweep's best go on soonest
            for trial_id in self._top(rung):
                if trial_id in paused and self._waiting[trial_id] == rung:
                    return self._promote(paused[trial_id], rung)
        if chosen := next((t for t in trials if t.status == t.PENDING), None):
            return chosen
        running = sum(t.status == t.RUNNING for t in trials)
        self._most_running = max(self._most_running, running)  # what the sweep's resources hold, as far as seen
        if not paused:
            return None
        if tune_controller.search_alg.is_finished():  # no trial will start: what waits is all there is to run
            self._stop_where_no_result_can_come(tune_controller, trials)
            if running < self._most_running or not running:  # a trial slot would stay empty
                return self._a_waiting_leader(self._paused(trials))
            return None
        if not running:  # a concurrency limit holds new trials back meanwhile
            rung = min(self._waiting[trial_id] for trial_id in paused)
            here = [trial_id for trial_id in paused if self._waiting[trial_id] == rung]
            return self._promote(paused[max(here, key=self._rungs[rung].get)], rung)
        return None

    def _paused(self, trials) -> dict:
        return {t.trial_id: t for t in trials if t.status == t.PAUSED and t.trial_id in self._waiting}

    def _stop_where_no_result_can_come(self, tune_controller, trials) -> None:
        """Stops the trials that wait at a rung no other trial can still reach, but for the rung's best, the lowest rung
        first; a rung above one whose best waits, or above a running trial, may still get results."""
        running = [t.last_result.get(self._time_attr, 0) for t in trials if t.status in (t.PENDING, t.RUNNING)]
        for rung in sorted(self._rungs):
            if any(epoch < rung for epoch in running):
                return
            best, paused = self._top(rung, at_least=1), self._paused(trials)
            here = [trial_id for trial_id in paused if self._waiting[trial_id] == rung]
            for trial_id in here:
                if trial_id not in best:
                    self._stop(tune_controller, paused[trial_id])
            if any(trial_id in best for trial_id in here):
                return

    def _stop(self, tune_controller, trial) -> None:
        self._leave(trial.trial_id)
        self._num_stopped += 1
        stop_and_record(tune_controller, trial)

    def _a_waiting_leader(self, paused: dict):
        """The best of a rung's results, if its trial waits there, the furthest rung first: asked when a trial slot
        would stay empty, it goes on without waiting for the rung to fill (the sweep's best waited at its last rung
        while a core idled), as it would in the end unless a trial still running below overtook it there."""
        for rung in sorted(self._rungs, reverse=True):
            leader = next(iter(self._top(rung, at_least=1)), None)
            if leader in paused and self._waiting[leader] == rung:
                return self._promote(paused[leader], rung)
        return None

    def _promote(self, trial, rung: int):
        self._promoted[rung].add(trial.trial_id)
        self._waiting.pop(trial.trial_id, None)
        return trial

    def _leave(self, trial_id: str) -> None:
        """The trial is done with this scheduler (finished, stopped, removed or errored)."""
        self._waiting.pop(trial_id, None)
        self._trial_info.pop(trial_id, None)

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        self._leave(trial.trial_id)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._leave(trial.trial_id)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._leave(trial.trial_id)
