"""The command line: `python -m sweeps` (installed as `sweeps`). Run `sweeps --help` for the commands."""

from __future__ import annotations

import argparse
import errno
import os
import sys

USAGE_ERROR = 2  # bad input: the same status argparse uses
MACHINE_ERROR = 1  # the input was fine, the machine failed (disk full, storage gone)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    keep_ray_local(getattr(args, "address", None))
    from sweeps.evaluate import EvaluationError
    from sweeps.run import SweepError  # imports Ray: only after keep_ray_local

    try:
        return args.command(args) or 0
    except (SweepError, EvaluationError) as error:
        print(f"sweeps: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as error:  # the machine, not the input: a full disk, a lost mount, a permission taken away
        print(f"sweeps: error: {_machine_problem(error)}", file=sys.stderr)
        return MACHINE_ERROR


def _machine_problem(error: OSError) -> str:
    # Every table and figure is written under a temporary name, then renamed: what was written before stays whole.
    if error.errno == errno.ENOSPC:
        return f"no space left on device ({error}): free some space or choose another --storage; the files already written are whole"
    return f"{error}: check the storage path and the data path; the files already written are whole"


def keep_ray_local(address: str | None) -> None:
    """Ray reads these when it is imported, so they are set before any module of ours imports it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise send usage reports out
    if not address:
        # The embedded cluster then uses and binds 127.0.0.1 only: nothing of it is reachable from other hosts.
        # Never when joining a cluster, whose nodes must reach each other.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def list_experiments(args) -> None:
    from sweeps.experiments import EXPERIMENTS

    for entry in EXPERIMENTS.values():
        print(f"{entry.name}: {entry.description}")
        print(f"  optimises {entry.metric} ({entry.mode}); heads: {entry.heads or 'none'}; fixed: {entry.fixed or 'none'}")
        for name, preset in entry.presets.items():
            grid = entry.grid_for(name)
            size = 1
            for values in grid.values():
                size *= len(values)
            sweep = " x ".join(f"{k} {values}" for k, values in grid.items())
            print(f"  {name}: {preset.epochs} epochs, ASHA grace {preset.grace_period}; grid of {size}: {sweep}")
        ranges = entry.optuna_space(entry.grid_for("paper"))
        print("  optuna (paper): " + ", ".join(f"{k} {_describe(domain)}" for k, domain in ranges.items()))


def _describe(domain) -> str:
    """A Tune search domain in a few characters: {a, b}, 10..49, log 0.0001..0.01."""
    from ray.tune.search.sample import Integer, LogUniform

    if hasattr(domain, "categories"):
        return "{" + ", ".join(map(str, domain.categories)) + "}"
    upper = domain.upper - 1 if isinstance(domain, Integer) else domain.upper  # randint excludes its upper bound
    log = "log " if isinstance(domain.get_sampler(), LogUniform) else ""
    return f"{log}{domain.lower}..{upper}"


def run_sweep(args) -> None:
    from sweeps import run

    sweep = run.Sweep(
        experiment=args.experiment,
        preset=args.preset,
        search=args.search,
        num_samples=args.num_samples,
        early_stop=not args.no_early_stop,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        data=args.data,
        seed=args.seed,
        epochs=args.epochs,
        overrides=dict(args.set),
    )
    sweep_dir, datasets = run.prepare(sweep, args.storage, args.name)
    run.start_ray(args.address, sweep)
    run.claim(sweep, sweep_dir)
    run.fit(run.make_tuner(sweep, datasets, sweep_dir), sweep_dir)
    _finish(sweep_dir, args.no_report)


def resume_sweep(args) -> None:
    from sweeps import run, storage

    sweep_dir = storage.absolute(args.path)
    run.load_sweep(sweep_dir)  # fails before Ray starts if this is not a sweep
    run.check_fallback(args.corrupt_checkpoint)
    run.start_ray(args.address)
    _finish(run.resume(sweep_dir, args.corrupt_checkpoint), args.no_report)


def report(args) -> None:
    from sweeps import storage
    from sweeps.report import write_report

    sweep_dir = storage.absolute(args.path)
    print(f"report: {write_report(sweep_dir, args.top)}")


def _finish(sweep_dir: str, no_report: bool) -> None:
    _summary(sweep_dir)
    if not no_report:
        from sweeps.report import write_report

        print(f"report: {write_report(sweep_dir)}")


def evaluate_checkpoint(args) -> None:
    import json

    from sweeps import evaluate

    trained = evaluate.load(args.checkpoint)
    splits = evaluate.splits_of(trained, args.data)
    metrics = evaluate.metrics(trained, splits, args.split)
    if args.json:
        print(json.dumps(metrics))
        return
    count = len(getattr(splits, args.split))
    print(f"{args.checkpoint}: {trained.data['experiment']}, epoch {trained.epoch}, on the {args.split} split ({count} sequences)")
    for name, value in metrics.items():
        print(f"  {name:<18} {value:.6g}")


def status(args) -> None:
    from sweeps import storage

    _summary(storage.absolute(args.path))


def bench(args) -> int:
    from sweeps import bench as benchmark

    return benchmark.main(quick=args.quick, out=args.out)


def _summary(sweep_dir: str) -> None:
    from sweeps import collect, run

    sweep = run.load_sweep(sweep_dir)
    trials, _ = collect.collect(sweep_dir)
    entry = sweep.entry
    finished = trials[(trials.status == "TERMINATED") & ~trials.stopped_early & ~trials.diverged]
    counts = {
        "finished": len(finished),
        "stopped early": int(trials.stopped_early.sum()),
        "diverged": int(trials.diverged.sum()),
        "errored": int((trials.status == "ERROR").sum()),
        "running or pending": int(trials.status.isin(["RUNNING", "PENDING", "PAUSED"]).sum()),
    }
    print(f"{sweep_dir}: {len(trials)} trials of {sweep.experiment} ({sweep.preset}, {sweep.search}): " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    column = f"best_{entry.metric}"
    ranked = collect.ranked(trials, entry.metric, entry.mode)  # the same choice as the report's
    if len(ranked):
        top = ranked.iloc[0]
        config = {name: _plain(top[f"config/{name}"]) for name in sweep.grid() if f"config/{name}" in top}
        print(f"best so far: {entry.metric} = {top[column]:.6g} at trial {top.trial_id} {config}")


def _plain(value):
    return value.item() if hasattr(value, "item") else value  # numpy scalars print as np.int64(32)


def _hyperparameter(text: str) -> tuple[str, list]:
    name, sep, values = text.partition("=")
    if not sep or not name or not values:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,VALUE...], got {text!r}")
    return name, [_number(v) for v in values.split(",")]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sweeps", description="LSTM autoencoder sweeps on Ray Tune.")
    commands = top.add_subparsers(required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="the experiments, their presets and search spaces")
    listing.set_defaults(command=list_experiments)

    runner = commands.add_parser("run", help="run an experiment's sweep")
    runner.set_defaults(command=run_sweep)
    runner.add_argument("experiment", metavar="NAME", help="an experiment of `sweeps list`")
    runner.add_argument("--preset", default="quick", help="quick (minutes on a laptop) or paper (the study's budgets)")
    runner.add_argument("--search", default="grid", help="grid (the study's grid) or optuna (seeded TPE over its ranges)")
    runner.add_argument("--num-samples", type=int, help="optuna: trials (default: the grid's size); grid: repeats with other seeds")
    runner.add_argument("--no-early-stop", action="store_true", help="run every trial to its budget (no ASHA)")
    runner.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs each trial gets (torch threads follow)")
    runner.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs each trial gets: 1/k packs k trials on a GPU")
    runner.add_argument("--max-concurrent", type=int, help="trials running at once (default: as many as resources allow)")
    runner.add_argument("--storage", default="results", help="folder or URI (s3://, gs://, shared NFS path) for results")
    runner.add_argument("--name", help="the sweep's folder name under --storage (default: experiment-preset-search-time)")
    runner.add_argument("--address", help="join a running Ray cluster (`auto`, or host:port); default: start a local one")
    runner.add_argument("--data", help="MNIST root folder, or the S&P 500 CSV (plain or gzipped)")
    runner.add_argument("--seed", type=int, default=0, help="data split, initial weights and batch order")
    runner.add_argument("--epochs", type=int, help="epochs per trial (default: the preset's)")
    runner.add_argument("--set", type=_hyperparameter, action="append", default=[], metavar="NAME=V1[,V2...]",
                        help="fix a hyperparameter (one value) or sweep it over these values, e.g. --set lr=1e-3,3e-3")
    runner.add_argument("--no-report", action="store_true", help="do not write the report at the end")

    resumer = commands.add_parser("resume", help="continue an interrupted sweep")
    resumer.set_defaults(command=resume_sweep)
    resumer.add_argument("path", help="the sweep's folder")
    resumer.add_argument("--address", help="join a running Ray cluster instead of starting a local one")
    resumer.add_argument("--corrupt-checkpoint", default="previous", metavar="previous|scratch",
                         help="where a trial whose last checkpoint cannot be read goes on from (default: previous)")
    resumer.add_argument("--no-report", action="store_true", help="do not write the report at the end")

    reporter = commands.add_parser("report", help="figures and report.md of a sweep, from its files")
    reporter.set_defaults(command=report)
    reporter.add_argument("path", help="the sweep's folder")
    reporter.add_argument("--top", type=int, default=10, help="trials in the table of all trials")

    evaluator = commands.add_parser("evaluate", help="a trial checkpoint's metrics on the test (or validation) split")
    evaluator.set_defaults(command=evaluate_checkpoint)
    evaluator.add_argument("checkpoint", help="a model.pt, or the checkpoint_* folder that holds one")
    evaluator.add_argument("--data", help="where the checkpoint's data is now (default: where it was trained)")
    evaluator.add_argument("--split", default="test", choices=["test", "val"], help="which split (default: test)")
    evaluator.add_argument("--json", action="store_true", help="one JSON object of the metrics on stdout")

    stat = commands.add_parser("status", help="trials finished, running, stopped early or errored, and the best so far")
    stat.set_defaults(command=status)
    stat.add_argument("path", help="the sweep's folder")

    bencher = commands.add_parser("bench", help="overheads of the trainer, Ray Tune and ASHA, threads, memory: ratios measured side by side")
    bencher.set_defaults(command=bench)
    bencher.add_argument("--quick", action="store_true", help="small sizes: under 2 minutes on 2 cores (the full run: under 20)")
    bencher.add_argument("--out", help="folder for bench.parquet and machine.json (default: results/bench-<time>)")
    return top


if __name__ == "__main__":
    sys.exit(main())
