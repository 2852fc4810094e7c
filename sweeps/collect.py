"""A sweep's results as two tables, from the files alone (finished, interrupted or still running):

- `trials.parquet`: one row per trial: `trial_id`, `config/<name>`, `status`, `stopped_early`, `diverged`,
  `epochs`, `best_<metric>` and `last_<metric>` for every metric, `wall_time_s`, `node_id`, `error` (why an errored
  or diverged trial ended);
- `metrics.parquet`: one row per trial and epoch: `trial_id`, `epoch`, the metrics, and `resumed` (the first epoch
  after the trial went on from a checkpoint: it waited at a rung before it, or stopped with the sweep).

Ray Tune's own files are read through `ExperimentAnalysis`; an epoch reported twice (a trial restarted from
an earlier checkpoint reports the epochs after it again) is kept once, as last reported.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pandas as pd

from lstm_ae.train import direction
from sweeps import checkpoints, storage
from sweeps.experiments import best_column, best_first, score

TRIALS_FILE = "trials.parquet"
METRICS_FILE = "metrics.parquet"
UNFINISHED = ("RUNNING", "PENDING", "PAUSED")  # Ray's states of a trial that has more to run


def best(metric: str, values: pd.Series):
    return max(values, key=lambda value: score(value, direction(metric)))


def ranked(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Trials that can be chosen, best first: not diverged, not errored, with a finite best value."""
    column = best_column(metric)
    if column not in trials:  # no trial has reported yet
        return trials.iloc[0:0]
    usable = trials[~trials.diverged & (trials.status != "ERROR")]
    usable = usable[np.isfinite(usable[column].astype(float))]
    return best_first(usable, column, mode)


def plain(value):
    """A table's value as Python's own (numpy scalars print as np.int64(32))."""
    return value.item() if hasattr(value, "item") else value


def swept_values(sweep, trial: pd.Series) -> dict:
    """What the sweep varies (its grid, and the seed of each repeat), as this trial row has it."""
    return {name: plain(trial[f"config/{name}"]) for name in sweep.swept() if f"config/{name}" in trial}


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(("train_", "val_"))]


class _DropMissingResults(logging.Filter):
    """ExperimentAnalysis warns of every trial without a results file, which includes every pending trial of a
    running sweep (ray/tune/analysis/experiment_analysis.py, _fetch_trial_dataframes): `collect` says it itself,
    for the trials that did run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to fetch metrics")


logging.getLogger("ray.tune.analysis.experiment_analysis").addFilter(_DropMissingResults())


def has_ray_state(sweep_dir: str) -> bool:
    """Whether Ray Tune has written its record of the sweep's trials: not where the sweep was stopped before Tune's
    loop began (its Tuner may be saved, `tuner.pkl`, with no record beside it)."""
    return any(name.startswith("experiment_state-") and name.endswith(".json") for name in storage.names(sweep_dir))


def collect(sweep_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every trial's row and every epoch's, from Ray Tune's record of the sweep (none where it has none yet)."""
    from ray.tune import ExperimentAnalysis  # (here: the report and status read the tables without Ray)

    if not has_ray_state(sweep_dir):
        return pd.DataFrame(), pd.DataFrame()
    analysis = ExperimentAnalysis(sweep_dir)
    rows, metrics = [], []
    for trial in analysis.trials:
        history = _epochs(analysis.trial_dataframes.get(trial.trial_id, pd.DataFrame()), trial)
        if history.empty and trial.status == "TERMINATED":  # (a pending or starting trial has none yet)
            print(
                f"collect: trial {trial.trial_id} finished, but its results file is gone: no metrics", file=sys.stderr
            )
        metrics.append(history.assign(trial_id=trial.trial_id))
        rows.append(_trial_row(trial, history, storage.uri_for(sweep_dir, trial.path)))
    trials = pd.DataFrame(rows).sort_values("trial_id", ignore_index=True) if rows else pd.DataFrame()
    per_epoch = pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame()
    if "resumed" in per_epoch:  # (epochs taken from a checkpoint have none)
        per_epoch["resumed"] = per_epoch["resumed"].eq(True)
    columns = ["trial_id", "epoch", *metric_columns(per_epoch), "resumed", "node_id", "time_total_s"]
    return trials, per_epoch.reindex(columns=[c for c in columns if c in per_epoch.columns])


def _epochs(frame: pd.DataFrame, trial) -> pd.DataFrame:
    if frame.empty or "epoch" not in frame:
        return pd.DataFrame(columns=["epoch"])
    logged = frame.drop_duplicates("epoch", keep="last")
    if "iterations_since_restore" in logged:  # Ray counts from 1 again whenever a trial goes on from a checkpoint
        logged = logged.assign(resumed=(logged["iterations_since_restore"] == 1) & (logged["epoch"] > 1))
    return _with_gaps_filled(logged, trial).sort_values("epoch").reset_index(drop=True)


def _with_gaps_filled(logged: pd.DataFrame, trial) -> pd.DataFrame:
    """The epochs missing from Ray's log, taken from the trial's newest checkpoint: a resume can go on from a
    checkpoint newer than the killed driver's last logged epoch (checkpoints.restore, checkpoints.mend_records), even
    from the final one (the trial then has nothing left to report), and every checkpoint holds all epochs before it. Their Ray-side columns
    (time, node) stay empty."""
    last = int(logged["epoch"].max())
    gaps = set(range(1, last + 1)) - set(logged["epoch"])
    short = trial.status == "TERMINATED" and last < trial.config.get("epochs", last)  # (or stopped by ASHA)
    if not (gaps or short) or trial.checkpoint is None:
        return logged
    try:
        kept = checkpoints.read_newest_history(trial.checkpoint)
    except checkpoints.CheckpointError as error:
        if gaps:
            print(f"collect: trial {trial.trial_id}: epochs missing from its log, and {error}", file=sys.stderr)
        return logged
    found = kept[~kept["epoch"].isin(logged["epoch"])]
    if "diverged" in logged:
        found = found.assign(diverged=~np.isfinite(found["train_loss"]))
    return pd.concat([logged, found], ignore_index=True)


def _trial_row(trial, history: pd.DataFrame, path: str) -> dict:
    """`path`: the trial's folder as a location (a URI on remote storage)."""
    config = {f"config/{k}": v for k, v in trial.config.items()}
    epochs = int(history["epoch"].max()) if len(history) else 0
    diverged = bool(history["diverged"].any()) if "diverged" in history else False
    finished = trial.status == "TERMINATED"
    row = {
        "trial_id": trial.trial_id,
        **config,
        "status": trial.status,
        # Ray marks a trial ASHA stopped as TERMINATED, like one that ran its budget: the epochs tell them apart.
        "stopped_early": finished and not diverged and epochs < trial.config["epochs"],
        "diverged": diverged,
        "epochs": epochs,
        "wall_time_s": float(history["time_total_s"].max()) if "time_total_s" in history and len(history) else 0.0,
        "node_id": history["node_id"].iloc[-1] if "node_id" in history and len(history) else None,
        "error": _diverged_at(history) if diverged else _error(trial, path),
        "path": path,
    }
    for column in metric_columns(history):
        values = history[column].dropna()
        row[best_column(column)] = best(column, values) if len(values) else float("nan")
        row[f"last_{column}"] = history[column].iloc[-1] if len(history) else float("nan")
    return row


def _diverged_at(history: pd.DataFrame) -> str:
    first = history[history["diverged"].astype(bool)].iloc[0]
    return f"diverged: train_loss {first['train_loss']} at epoch {int(first['epoch'])} (lower lr, or clip gradients with grad_clip)"


def _error(trial, path: str) -> str | None:
    """The last line of the trial's error file (its exception), where it failed."""
    if trial.status != "ERROR":
        return None
    try:
        text = storage.read_bytes(storage.join(path, "error.txt")).decode(errors="replace").strip()
        return text.splitlines()[-1] if text else "error (no message)"
    except OSError:
        return "error (no error.txt)"


def write_tables(sweep_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials, metrics = collect(sweep_dir)
    save_tables(sweep_dir, trials, metrics)
    return trials, metrics


def save_tables(folder: str, trials: pd.DataFrame, metrics: pd.DataFrame) -> None:
    storage.write_parquet(storage.join(folder, TRIALS_FILE), trials)
    storage.write_parquet(storage.join(folder, METRICS_FILE), metrics)
