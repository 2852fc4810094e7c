"""Where a sweep stands, from its files alone (running or finished, local or on a storage URI, from any terminal):

    sweeps status results/<sweep> [--watch [SECONDS]] [--json]

Trials by state out of the sweep's total, each running trial's epoch out of its budget and its metric, the best
trial so far, the time since the sweep began and an estimate of the time left.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime

import pandas as pd

from sweeps import collect, lock, storage
from sweeps.sweep import SWEEP_FILE, Sweep, load_sweep


def counts(trials: pd.DataFrame) -> dict:
    """Trials by state: the one counting that `status`, the run's summary and the report share."""
    if trials.empty:
        return dict.fromkeys(("finished", "stopped early", "diverged", "errored", "running", "waiting", "pending"), 0)
    status, running = trials.status, _running(trials)
    waiting = running & (status == "PAUSED")  # at a rung, until the scheduler promotes or stops it
    return {
        "finished": int(((status == "TERMINATED") & ~trials.stopped_early & ~trials.diverged).sum()),
        "stopped early": int(trials.stopped_early.sum()),
        "diverged": int(trials.diverged.sum()),
        "errored": int((status == "ERROR").sum()),
        "running": int((running & ~waiting).sum()),
        "waiting": int(waiting.sum()),
        "pending": int((status.isin(collect.UNFINISHED) & ~running).sum()),
    }


def _running(trials: pd.DataFrame) -> pd.Series:
    """Unfinished trials that have reported an epoch. Ray's record of the sweep (experiment_state) is written only
    now and then, and can still say PENDING for a trial that has run for an hour; its results say what it did."""
    return trials.status.isin(collect.UNFINISHED) & (trials.epochs > 0)


@dataclass
class Status:
    sweep_dir: str
    experiment: str
    preset: str
    search: str
    metric: str
    total: int  # trials the sweep will run, created by Ray or not yet
    counts: dict
    running: list = field(default_factory=list)  # {trial_id, config, epoch, budget, value, waiting}
    best: dict | None = None  # {trial_id, config, value}
    elapsed_s: float | None = None
    left_s: float | None = None  # at most: every trial to its budget
    left_min_s: float | None = None  # at least: ASHA stopping every trial it may at its next rung
    scheduler: str = ""  # --scheduler, "" without early stopping
    rungs: list = field(default_factory=list)  # the epochs at which it may stop or pause a trial
    driver: str | None = None  # "process N on HOST": the live driver running the sweep now (sweeps.lock), if any

    @property
    def done(self) -> bool:
        unfinished = self.counts["running"] + self.counts["waiting"] + self.counts["pending"]
        return unfinished == 0 and self.created >= self.total

    @property
    def created(self) -> int:
        return sum(self.counts.values())


def read(sweep_dir: str) -> Status:
    sweep = load_sweep(sweep_dir)
    trials, metrics = collect.collect(sweep_dir)
    entry = sweep.entry
    state = Status(
        sweep_dir, sweep.experiment, sweep.preset, sweep.search, entry.metric, sweep.planned_trials(), counts(trials)
    )
    if sweep.early_stop:
        from sweeps import schedulers  # (Ray's, imported when asked: the command line reads this module)

        state.scheduler, state.rungs = sweep.scheduler, schedulers.rungs_before_budget(sweep)
    if held := lock.holder(sweep_dir):
        state.driver = lock.describe(held)
    if trials.empty:
        return state
    for _, trial in trials[_running(trials)].iterrows():
        state.running.append(
            {
                "trial_id": trial.trial_id,
                "config": collect.swept_values(sweep, trial),
                "epoch": int(trial.epochs),
                "budget": int(trial["config/epochs"]),
                "value": _finite(trial.get(f"last_{entry.metric}")),
                "waiting": trial.status == "PAUSED",  # at a rung, for the scheduler to promote or stop
            }
        )
    ranked = collect.ranked(trials, entry.metric, entry.mode)
    if len(ranked):
        top = ranked.iloc[0]
        state.best = {
            "trial_id": top.trial_id,
            "config": collect.swept_values(sweep, top),
            "value": float(top[entry.running_best]),
        }
    state.elapsed_s = _elapsed(sweep_dir)
    state.left_min_s, state.left_s = _time_left(metrics, state, sweep)
    return state


def _elapsed(sweep_dir: str) -> float | None:
    try:
        created = datetime.strptime(
            storage.read_json(storage.join(sweep_dir, SWEEP_FILE))["created"], "%Y-%m-%dT%H:%M:%S%z"
        )
    except (KeyError, ValueError, TypeError):
        return None
    return max(0.0, time.time() - created.timestamp())


def _time_left(metrics: pd.DataFrame, state: Status, sweep: Sweep) -> tuple[float | None, float | None]:
    """(at least, at most): the epochs left times the mean seconds per epoch so far, shared by the trials running at
    once. At most, every trial runs to its budget; at least, ASHA stops each at its next rung, and the trials not yet
    started at the first (without ASHA, both are the budget)."""
    if "time_total_s" not in metrics or metrics.empty or not state.running:
        return (0.0, 0.0) if state.done else (None, None)
    per_trial = metrics.groupby("trial_id").time_total_s.max() / metrics.groupby("trial_id").epoch.max()
    seconds = float(per_trial.mean()) / len(state.running)
    not_started = state.total - state.created + state.counts["pending"]
    most = sum(r["budget"] - r["epoch"] for r in state.running) + not_started * sweep.budget
    if not sweep.early_stop:
        return seconds * most, seconds * most
    from sweeps import schedulers

    rungs = schedulers.rungs(sweep)
    to_next_rung = [min([m for m in rungs if m > r["epoch"]] or [r["budget"]]) - r["epoch"] for r in state.running]
    return seconds * (sum(to_next_rung) + not_started * rungs[0]), seconds * most


def text(state: Status) -> str:
    counted = ", ".join(f"{n} {what}" for what, n in state.counts.items())
    lines = [
        f"{state.sweep_dir}: {state.created} of {state.total} trials of {state.experiment} "
        f"({state.preset}, {state.search}): {counted}"
    ]
    if state.driver:
        lines.append(f"running now, driven by {state.driver}")
    elif not state.done:
        lines.append(f"no driver runs it now: continue it with `sweeps resume {state.sweep_dir}`")
    if state.scheduler:
        waiting = Counter(r["epoch"] for r in state.running if r["waiting"])
        at = "; waiting there: " + ", ".join(f"{n} at {e}" for e, n in sorted(waiting.items())) if waiting else ""
        rungs = f"rungs at epochs {', '.join(map(str, state.rungs))}" if state.rungs else "no rung before the budget"
        lines.append(f"early stopping: {state.scheduler}, {rungs}{at}")
    for r in state.running:
        value = "-" if r["value"] is None else f"{r['value']:.6g}"
        lines.append(
            f"  {'waiting' if r['waiting'] else 'running'} {r['trial_id']}{_values(r['config'])}: "
            f"epoch {r['epoch']}/{r['budget']}, {state.metric} {value}"
        )
    if state.best:
        lines.append(
            f"best so far: {state.metric} = {state.best['value']:.6g} at trial {state.best['trial_id']}{_values(state.best['config'])}"
        )
    timing = []
    if state.elapsed_s is not None and not state.done:  # (since it started: a finished sweep's would keep growing)
        timing.append(f"started {_duration(state.elapsed_s)} ago")  # (pauses between resumes included)
    if state.left_s is not None and not state.done:
        if state.left_min_s == state.left_s:
            timing.append(f"about {_duration(state.left_s)} left")
        else:
            timing.append(
                f"{_duration(state.left_min_s)} to {_duration(state.left_s)} left (as ASHA stops trials or lets them run)"
            )
    if timing:
        lines.append("; ".join(timing))
    return "\n".join(lines)


def as_json(state: Status) -> dict:
    return {**asdict(state), "done": state.done}


def _values(config: dict) -> str:
    """ " hidden_size=40 lr=0.001" (with its leading space), or nothing for a sweep of one configuration."""
    return "".join(f" {k}={v}" for k, v in config.items())


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
