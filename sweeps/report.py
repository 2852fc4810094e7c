"""The report of a sweep, from its files alone (finished, interrupted or still running; local or copied from
a cluster): `report.md` and `figures/*.png` in the sweep's folder.

    sweeps report results/<sweep> [--top K]

The best trial is chosen on validation; the weights of its best epoch (which every checkpoint keeps) are evaluated
on the test split, used for nothing else.
"""

from __future__ import annotations

import math
import shlex
import sys
from dataclasses import replace

import numpy as np
import optuna
import pandas as pd

from sweeps import checkpoints, collect, evaluate, figures, hyperparameters, lock, status, storage
from sweeps.collect import plain
from sweeps.errors import SweepError, first_line
from sweeps.experiments import best_column, best_first, score
from sweeps.report_figures import EXPERIMENT_FIGURES, FIGURES, Context, trial_label
from sweeps.sweep import SCHEDULERS, Sweep, command_line, load_sweep, relative

REPORT_FILE = "report.md"
TOP_TRIALS = 10  # rows of the table of all trials


def best_checkpoint(trial_path: str, metric: str, mode: str) -> evaluate.Trained | None:
    """The trial's readable checkpoint whose weights have the best value of `metric` (those of the best epoch up to
    it, or for older checkpoints of its own epoch; the newest where none has a finite one); a damaged checkpoint is
    skipped, with a line saying which and why. None: none is readable."""
    scored = []
    for name in (n for n in storage.names(trial_path) if n.startswith("checkpoint_")):
        path = storage.join(trial_path, name)
        try:
            trained = evaluate.load(path)  # (refuses a checkpoint whose files are links, before reading any)
            history = storage.read_parquet(storage.join(path, checkpoints.METRICS_FILE))
            value = float(history.loc[history.epoch == trained.epoch, metric].iloc[-1])
        except Exception as error:  # truncated, tampered with, half-written: any reason means "not this one"
            print(
                f"report: skipped the unreadable checkpoint {path} ({type(error).__name__}: {first_line(error)})",
                file=sys.stderr,
                flush=True,
            )
            continue
        scored.append((score(value, mode), trained))
    finite = [s for s in scored if math.isfinite(s[0])]
    if finite:
        return max(finite, key=lambda s: s[0])[1]
    return scored[-1][1] if scored else None


def _best_readable(choices: pd.DataFrame, entry) -> tuple[pd.Series | None, evaluate.Trained | None]:
    """The best trial (in `choices`' order) with a readable checkpoint, and its best such checkpoint."""
    for _, trial in choices.iterrows():
        trained = best_checkpoint(trial.path, entry.metric, entry.mode)
        if trained is not None:
            return trial, trained
    return None, None


def write_report(
    sweep_dir: str,
    top: int = TOP_TRIALS,
    data: str | None = None,
    format: str = figures.FORMATS[0],
    out: str | None = None,
) -> str:
    """`data`: where the sweep's data is now, if it moved (a folder copied from a cluster); `format`: the figures';
    `out`: a folder to publish the report in instead of the sweep's own: report.md, figures/, the two tables and the
    best checkpoint's model.pt, all that `sweeps evaluate` needs to check the report's test figures."""
    sweep = load_sweep(sweep_dir)
    if data:
        sweep.data = storage.absolute(data)
    entry = sweep.entry
    trials, metrics = collect.collect(sweep_dir)
    if trials.empty:
        raise SweepError(
            f"{sweep_dir}: no trial has started yet, nothing to report: run it with sweeps resume {sweep_dir}"
        )
    # Published elsewhere, the sweep is only read (it may be a read-only copy); else its tables are refreshed.
    target = storage.absolute(out) if out else sweep_dir
    if out:
        storage.require_writable(target, "--out")
    collect.save_tables(target, trials, metrics)
    folder = storage.join(target, FIGURES)
    storage.make_dirs(folder)
    choices = collect.ranked(trials, entry.metric, entry.mode)
    sections = [_header(sweep, trials, lock.holder(sweep_dir))]
    # A trial stopped before its first checkpoint has no model to evaluate: the best one that has a readable one.
    best, trained = _best_readable(choices, entry)
    if best is None:
        failed = all_failed(trials)
        sections.append(
            f"{failed[0].upper()}{failed[1:]}: nothing to report beyond the table below."
            if failed
            else "No trial has a usable result with a readable checkpoint yet: nothing to report beyond the table below."
        )
        sections.append(_trials_table(trials, sweep, top))
        return _write(target, sections)
    if best.trial_id != choices.iloc[0].trial_id:
        sections.append(
            f"> The best trial, `{choices.iloc[0].trial_id}`, has no readable checkpoint (stopped before its first, "
            f"or damaged): the report evaluates the best trial that has one."
        )
    if out:  # the checkpoint published with the report, and evaluated from there
        published = storage.join(target, checkpoints.MODEL_FILE)
        storage.write_bytes(published, storage.read_bytes(storage.join(trained.path, checkpoints.MODEL_FILE)))
        trained = replace(trained, path=published)
    ctx = _context(sweep, best, trained, metrics, folder)
    ctx.format = format
    test = evaluate.metrics(ctx.trained, ctx.splits, "test")
    sections += [_best_section(ctx, test), *_edge_warnings(sweep, trials, best)]
    shown = _standard_figures(ctx, trials, metrics)
    for name in entry.figures:
        shown += EXPERIMENT_FIGURES[name](ctx)
    sections += ["## Figures", *[f"![{caption}]({path})\n\n*{caption}*" for path, caption in shown]]
    sections += ctx.tables
    sections.append(_trials_table(trials, sweep, top))
    return _write(target, sections)


def _write(folder: str, sections: list[str]) -> str:
    path = storage.join(folder, REPORT_FILE)
    storage.write_bytes(path, ("\n\n".join(sections) + "\n").encode())
    return path


def _context(sweep: Sweep, best: pd.Series, trained: evaluate.Trained, metrics: pd.DataFrame, folder: str) -> Context:
    data_params = {name: best[f"config/{name}"] for name in sweep.entry.data_params}
    splits = sweep.entry.load(sweep.data_path(), sweep.seed, sweep.preset, **data_params)
    history = metrics[metrics.trial_id == best.trial_id].reset_index(drop=True)
    return Context(sweep, best, history, trained, splits, folder, [])


def _header(sweep: Sweep, trials: pd.DataFrame, driver: dict | None = None) -> str:
    """`driver`: the lock record of the driver running the sweep now (sweeps.lock), if one is."""
    entry = sweep.entry
    counted = status.counts(trials)
    words = {
        "finished": "ran the whole budget",
        "stopped early": "stopped early",
        "running": "not finished (running, or stopped with the sweep)",
        "waiting": "waiting at a rung (paused) when the sweep stopped",
        "pending": "not started",
    }
    summary = ", ".join(f"{n} {words.get(what, what)}" for what, n in counted.items() if n)
    planned = sweep.planned_trials()
    count = (
        f"{len(trials)} of {planned} trials"
        if len(trials) < planned
        else f"{len(trials)} trial{'' if len(trials) == 1 else 's'}"
    )
    return "\n".join(
        [
            f"# {entry.name}: {entry.description}",
            "",
            f"{count} ({summary}); {_epochs_trained(trials)} in {trials.wall_time_s.sum() / 60:.1f} trial-minutes. "
            f"Preset `{sweep.preset}`, {sweep.search} search, seed {sweep.seed}; the best trial is chosen on `{entry.metric}` ({entry.mode}).",
            "",
            _early_stopping(sweep, trials),
            *(
                ["", f"> Running now, driven by {lock.describe(driver)}: this report covers what has run so far."]
                if driver
                else []
            ),
            "",
            "Reproduce with:",
            "",
            f"    {command_line(sweep, relative_paths=True)}",
        ]
    )


def _early_stopping(sweep: Sweep, trials: pd.DataFrame) -> str:
    """Which scheduler ran, and what it saved against training every trial it stopped to its budget."""
    if not sweep.early_stop:
        return "No early stopping (`--no-early-stop`): every trial had its whole budget."
    stopped = trials[trials.stopped_early]
    left = stopped["config/epochs"] - stopped.epochs
    seconds = (left * stopped.wall_time_s / stopped.epochs.clip(lower=1)).sum()  # at each trial's own pace
    from sweeps import schedulers  # (Ray's, imported when a report is written: the command line reads this module)

    rungs = ", ".join(map(str, schedulers.rungs_before_budget(sweep)))
    return (
        f"Early stopping: {SCHEDULERS[sweep.scheduler]} (`--scheduler {sweep.scheduler}`), rungs at epochs {rungs}, "
        f"each passing 1/{sweep.reduction_factor} of its trials on. "
        f"It stopped {len(stopped)} trial{'' if len(stopped) == 1 else 's'}: {int(left.sum())} epochs and about "
        f"{seconds / 60:.1f} trial-minutes saved against training them to their budgets (at each one's own pace)."
    )


def _epochs_trained(trials: pd.DataFrame) -> str:
    """How many epochs the trials trained, as a share of their budgets (ASHA, and unfinished trials, train less)."""
    trained, budget = int(trials.epochs.sum()), int(trials["config/epochs"].sum())
    return f"{trained} of {budget} epochs trained ({trained / budget:.0%})" if budget else f"{trained} epochs trained"


def _best_section(ctx: Context, test: dict) -> str:
    sweep, best, metric = ctx.sweep, ctx.best, ctx.sweep.entry.metric
    at_checkpoint = ctx.history.loc[ctx.history.epoch == ctx.epoch, metric]
    # What was swept; for a sweep of one configuration, the study's grid dimensions it pinned.
    names = sweep.grid() or [name for name in sweep.entry.grid if f"config/{name}" in best]
    swept = {name: plain(best[f"config/{name}"]) for name in names}
    rows = "\n".join(f"| {name} | {value:.6g} |" for name, value in test.items())
    return "\n".join(
        [
            "## Best trial",
            "",
            f"Trial `{best.trial_id}`: {', '.join(f'{k} = {v}' for k, v in swept.items())}; "
            f"best `{metric}` = {best[best_column(metric)]:.6g} in {best.epochs} epochs.",
            "",
            f"Its weights of epoch {ctx.epoch} (the best a checkpoint kept, `{metric}` = {_fmt(at_checkpoint.iloc[0]) if len(at_checkpoint) else '-'}) "
            f"on the test split ({len(ctx.splits.test)} sequences, used for nothing else), {_precision_said(ctx.trained)}:",
            "",
            "| test metric | value |",
            "| --- | --- |",
            rows,
            "",
            f"({evaluate.BASELINE_SAID}: a reconstruction's `mse` must beat it to have learned anything.)",
            "",
            "Evaluate that checkpoint again (paths relative to the folder the report was written from):",
            "",
            f"    {evaluate_command(ctx.trained.path, ctx.sweep.data)}",
        ]
    )


def _precision_said(trained: evaluate.Trained) -> str:
    trained_in = evaluate.trained_precision(trained)
    if trained_in == "fp32":
        return "in fp32"
    return f"in fp32, as any machine evaluates it (trained under {trained_in} autocast: `--precision {trained_in}` evaluates it so, where the hardware has it)"


def evaluate_command(checkpoint, data: str | None) -> str:
    """The `sweeps evaluate` command for a checkpoint, with paths relative to where the report is written from."""
    words = ["sweeps", "evaluate", relative(str(checkpoint))]
    if data:
        words += ["--data", relative(data)]
    return shlex.join(words)


EDGE = 0.1  # an Optuna best this close to an end of its range (as a share of the range's span) is on its edge


def _edge_warnings(sweep: Sweep, trials: pd.DataFrame, best: pd.Series) -> list[str]:
    """A best value on the edge of what was searched may mean the optimum lies outside it: the end of a grid's
    values, or for Optuna the outer tenth of a range (the values Optuna happened to sample have no edge to speak of)."""
    ranges = sweep.entry.optuna_space(sweep.grid()) if sweep.search == "optuna" else {}
    warnings = []
    for name, values in sweep.grid().items():
        value, searched = best.get(f"config/{name}"), ranges.get(name)
        if value is None:
            continue
        if searched is not None and searched.kind != "choice":
            side = _side_of_range(name, value, searched)
            where = f"in the {side} tenth of the range searched ({searched})"
        else:
            side = _end_of_values(value, searched.values if searched else values)
            where = f"the {side} value searched"
        if side:
            warnings.append(f"> Warning: the best {name} ({plain(value)}) is {where}: the optimum may lie beyond it.")
    return warnings


def _side_of_range(name: str, value: float, searched) -> str | None:
    """ "lowest" or "highest" where `value` lies in that tenth of the range and values beyond that end exist (not
    below a clip of 0 or above a recon_weight of 1: lstm_ae's own checks say), else None."""
    scale, unscale = (math.log, math.exp) if searched.kind == "log" else (float, float)
    low, high = scale(searched.low), scale(searched.high)
    position = (scale(value) - low) / (high - low) if high > low else 0.5
    side = "lowest" if position <= EDGE else "highest" if position >= 1 - EDGE else None
    if side is None:
        return None
    beyond = unscale(low - EDGE * (high - low)) if side == "lowest" else unscale(high + EDGE * (high - low))
    try:
        hyperparameters.check({name: round(beyond) if searched.kind == "int" else beyond}, epochs=1)
    except (ValueError, TypeError):
        return None  # nothing lies beyond that end
    return side


def _end_of_values(value, values) -> str | None:
    """ "smallest" or "largest" where `value` ends three or more numbers (two have no inside to leave), else None."""
    if not all(isinstance(v, (int, float)) for v in values) or len(set(values)) < 3:
        return None
    return "smallest" if value == min(values) else "largest" if value == max(values) else None


def _standard_figures(ctx: Context, trials: pd.DataFrame, metrics: pd.DataFrame) -> list:
    sweep, best = ctx.sweep, ctx.best
    metric = sweep.entry.metric
    label = trial_label(ctx)
    shown = [
        ctx.save(
            figures.validation_curves(metrics, trials, metric, best.trial_id, label),
            "curves",
            f"{metric} per epoch for every trial; the best in bold{figures.curve_marks(metrics, trials, metric)}.",
        )
    ]
    for name in sweep.grid():
        shown.append(
            ctx.save(
                figures.hyperparameter_effect(trials, name, metric, best.trial_id),
                f"effect_{name}",
                f"Best {metric} of each trial against {name}.",
            )
        )
    if len(seeds := _over_seeds(sweep, trials)):
        shown.append(
            ctx.save(
                figures.seed_spread(seeds, trials, metric),
                "seeds",
                f"Best {metric} of each configuration over its {sweep.num_samples} seeds, ranked on the mean.",
            )
        )
        ctx.tables.append(_seeds_table(seeds, metric, sweep.num_samples))
    if sweep.search == "optuna" and (values := _importances(sweep, trials)):
        shown.append(
            ctx.save(
                figures.importances(values),
                "importances",
                "Hyperparameter importances computed by Optuna (fANOVA) from the trials' best values.",
            )
        )
    return shown


def _over_seeds(sweep: Sweep, trials: pd.DataFrame) -> pd.DataFrame:
    """A grid repeated over seeds (--num-samples): each configuration's mean and standard deviation of its trials'
    best values, best mean first; empty otherwise. Diverged and errored trials are left out, as from the ranking."""
    if sweep.search != "grid" or not sweep.num_samples or sweep.num_samples < 2 or trials.empty:
        return pd.DataFrame()
    names = [f"config/{name}" for name in sweep.grid()]
    usable = collect.ranked(trials, sweep.entry.metric, sweep.entry.mode)
    grouped = usable.groupby(names, dropna=False) if names else usable.groupby(lambda _: "all")
    summary = grouped.agg(
        mean=(sweep.entry.running_best, "mean"),
        std=(sweep.entry.running_best, "std"),
        seeds=("trial_id", "size"),
        members=("trial_id", tuple),
    ).reset_index()
    summary["label"] = [
        ", ".join(f"{n.removeprefix('config/')}={plain(row[n])}" for n in names) or "all"
        for _, row in summary.iterrows()
    ]
    return best_first(summary, "mean", sweep.entry.mode).reset_index(drop=True)


def _seeds_table(summary: pd.DataFrame, metric: str, seeds: int) -> str:
    lines = [
        f"## Configurations over {seeds} seeds (best mean first)",
        "",
        f"| configuration | seeds | mean best {metric} | std |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {c.label} | {c.seeds} | {_fmt(c.mean)} | {_fmt(c.std)} |" for c in summary.itertuples()]
    return "\n".join(lines)


def _importances(sweep: Sweep, trials: pd.DataFrame) -> dict:
    entry = sweep.entry
    distributions = {k: r.to_optuna() for k, r in entry.optuna_space(sweep.grid()).items()}
    study = optuna.create_study(direction="minimize" if entry.mode == "min" else "maximize")
    for _, trial in collect.ranked(trials, entry.metric, entry.mode).iterrows():
        params = {name: plain(trial[f"config/{name}"]) for name in distributions}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=distributions, value=float(trial[entry.running_best])
            )
        )
    if len(study.trials) < 2:
        return {}
    return optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=sweep.seed)
    )


def _trials_table(trials: pd.DataFrame, sweep: Sweep, top: int) -> str:
    metric = sweep.entry.metric
    best = sweep.entry.running_best  # absent where no trial reported an epoch (every one failed before its first)
    ordered = best_first(trials, best, sweep.entry.mode) if best in trials else trials
    names = list(sweep.swept())  # the grid, and the seed of each repeat (--num-samples)
    header = ["trial", *names, f"best {metric}", f"last {metric}", "epochs", "stopped early", "status", "wall time (s)"]
    lines = [
        f"## All trials ({'top ' + str(top) + ' of ' if len(trials) > top else ''}{len(trials)}, best first)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for _, t in ordered.head(top).iterrows():
        status = "diverged" if t.diverged else t.status.lower()
        cells = [
            t.trial_id,
            *[plain(t.get(f"config/{n}")) for n in names],
            _fmt(t.get(best)),
            _fmt(t.get(f"last_{metric}")),
            t.epochs,
            "yes" if t.stopped_early else "no",
            status,
            f"{t.wall_time_s:.1f}",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines + _failures(trials))


def _failures(trials: pd.DataFrame) -> list[str]:
    """Why the errored or diverged trials ended (from trials.parquet's `error`), below the table: each reason once,
    with how many trials it ended and which."""
    failed = trials[trials["error"].notna()] if "error" in trials else trials.iloc[0:0]
    if failed.empty:
        return []
    lines = ["", "Trials that failed, left out of the best-trial choice:", ""]
    for error, group in failed.groupby("error", sort=False):
        if len(group) == 1:
            lines.append(f"- `{group.trial_id.iloc[0]}`: {error}")
            continue
        ids = ", ".join(f"`{i}`" for i in group.trial_id.head(SHOWN_IDS))
        more = f" and {len(group) - SHOWN_IDS} more" if len(group) > SHOWN_IDS else ""
        lines.append(f"- {error} ({_count(len(group))}: {ids}{more})")
    return lines


SHOWN_IDS = 5  # trial ids named per reason of failure


def _count(n: int) -> str:
    return f"{n} trial{'' if n == 1 else 's'}"


def all_failed(trials: pd.DataFrame) -> str | None:
    """Where every trial of a sweep errored: what ended them, in one line (each reason once, with its count, most
    common first); else None."""
    if trials.empty or "error" not in trials or not (trials.status == "ERROR").all():
        return None
    reasons = trials.error.fillna("error (no message)").value_counts()
    told = (
        "; ".join(f"{reason} ({_count(n)})" for reason, n in reasons.items()) if len(reasons) > 1 else reasons.index[0]
    )
    return f"every trial failed ({len(trials)} of {len(trials)}): {told}"


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float, np.floating)) and not pd.isna(value) else "-"
