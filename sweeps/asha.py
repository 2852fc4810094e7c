"""ASHA that survives a resume: Ray's ASHAScheduler, given back on a resume what each trial reported before it.

Ray saves no scheduler state with a sweep (TuneController.__getstate__ leaves `_scheduler_alg` out, Ray 2.60): a
resumed sweep's ASHA starts with empty rungs. A resumed trial is then judged at a rung it passed long ago against
the first value recorded there since, another trial's result hundreds of epochs later (seen in the synthetic grid: a
trial stopped at epoch 421, its first epoch after the resume, against another's epoch 561), and the trials still to
start face only the values recorded since the resume. Here each trial's logged results are replayed as Tune adds
the trial back, so the rungs hold what they held.
"""

from __future__ import annotations

import json
import math

from ray.tune.result import EXPR_RESULT_FILE
from ray.tune.schedulers import ASHAScheduler

REDUCTION_FACTOR = 4  # Ray's default, named: `sweeps status` reckons with the same rungs


def for_sweep(sweep) -> ResumableASHA:
    return ResumableASHA(
        time_attr="epoch", max_t=sweep.budget, grace_period=grace_period(sweep), reduction_factor=REDUCTION_FACTOR
    )


def grace_period(sweep) -> int:
    return min(sweep.grace_period or sweep.entry.presets[sweep.preset].grace_period, sweep.budget)


def rungs(sweep) -> list[int]:
    """The epochs at which ASHA may stop a trial, as Ray's ASHA sets them (async_hyperband.py, _Bracket)."""
    grace, budget = grace_period(sweep), sweep.budget
    count = int(math.log(budget / grace) / math.log(REDUCTION_FACTOR) + 1)  # Ray's own arithmetic
    return [grace * REDUCTION_FACTOR**k for k in range(count)]


class ResumableASHA(ASHAScheduler):
    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if self._time_attr not in (trial.last_result or {}):
            return  # a new trial: nothing to replay (and no file to read)
        stopped = self._num_stopped  # (the decisions below were taken before the resume: not counted again)
        for result in past_results(trial):
            # Records the result at the rung its epoch reached, as ASHA did then.
            self.on_trial_result(tune_controller, trial, result)
        self._num_stopped = stopped


def past_results(trial) -> list[dict]:
    """The results the trial logged in its results file (on its storage: a folder, S3...), oldest first."""
    storage = trial.storage
    path = f"{storage.trial_fs_path}/{EXPR_RESULT_FILE}"
    try:
        with storage.storage_filesystem.open_input_stream(path) as stream:
            text = stream.read().decode()
    except FileNotFoundError:
        return []  # lost with its folder: the trial is judged on its new results alone
    results = []
    for line in text.splitlines():
        try:
            results.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a killed driver
    return results
