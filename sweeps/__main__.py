"""The command line: `python -m sweeps` (installed as `sweeps`). Run `sweeps --help` for the commands."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import math
import os
import select
import signal
import sys

from lstm_ae.precision import PRECISIONS
from sweeps import signals
from sweeps.sweep import DEFAULT_SCHEDULER, ORDERS, REDUCTION_FACTORS, SCHEDULERS

USAGE_ERROR = 2  # bad input: the same status argparse uses
MACHINE_ERROR = 1  # the input was fine, the machine failed (disk full, storage gone)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from sweeps.cluster import keep_ray_local  # (imports no Ray: --help and `list` answer without it)

    keep_ray_local(getattr(args, "address", None))  # before anything imports Ray
    from sweeps.errors import Interrupted, SweepError, SweepInterrupted, TrialsFailed
    from sweeps.evaluate import EvaluationError
    from sweeps.storage import StorageError

    try:
        with signals.interrupting():
            status = args.command(args) or 0
            sys.stdout.flush()  # (a reader that left is told here, not in Python's exit)
            return status
    except Interrupted as stop:
        if isinstance(stop, SweepInterrupted):
            _summary(stop.sweep_dir)
        print(f"sweeps: {stop}", file=sys.stderr)
        return signals.exit_status(stop.signal or signal.SIGINT)
    except KeyboardInterrupt as stop:  # a signal outside a sweep's run: files are written whole or not at all
        signum = signals.received(stop)
        print(
            f"sweeps: interrupted ({signal.Signals(signum).name}): the files written so far are whole; "
            "run the command again to finish",
            file=sys.stderr,
        )
        return signals.exit_status(signum)
    except (SweepError, EvaluationError, StorageError) as error:
        print(f"sweeps: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except TrialsFailed as error:
        print(f"sweeps: error: {error}", file=sys.stderr)
        return MACHINE_ERROR
    except OSError as error:
        if isinstance(error, BrokenPipeError) and _reader_gone():  # `sweeps status | head -1`: ended as by SIGPIPE
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python's exit would flush into it again)
            return signals.exit_status(signal.SIGPIPE)
        # The machine, not the input: a full disk, a lost mount, a permission taken away.
        print(f"sweeps: error: {_machine_problem(error)}", file=sys.stderr)
        return MACHINE_ERROR


def _reader_gone() -> bool:
    """Whether the pipe this command writes its output into has lost its reader (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file behind the output (a notebook's, a test's capture)
        return False


def _machine_problem(error: OSError) -> str:
    # Every table and figure is written under a temporary name, then renamed: what was written before stays whole.
    if error.errno == errno.ENOSPC:
        return f"no space left on device ({error}): free some space or choose another --storage; the files already written are whole"
    return f"{error}: check the storage path and the data path; the files already written are whole"


def list_command(args) -> None:
    from sweeps import hyperparameters
    from sweeps.experiments import EXPERIMENTS, grid_size
    from sweeps.sweep import PER_TRIAL

    print(f"hyperparameters (--set NAME=V1[,V2...]): {hyperparameters.describe()}")
    print(f"also per trial: {', '.join(PER_TRIAL)} (several values sweep it, as a hyperparameter's do)")
    print("an experiment's fixed values and grid override those defaults; --set overrides both.")
    print(f"precision: {_precisions_here()}")
    print(f"early stopping (--scheduler, default {DEFAULT_SCHEDULER}; docs/performance.md):")
    for name, words in SCHEDULERS.items():
        print(f"  {name}: {words}; a rung passes 1/{REDUCTION_FACTORS[name]} on (--reduction-factor)")
    for entry in EXPERIMENTS.values():
        print(f"{entry.name}: {entry.description}")
        print(
            f"  optimises {entry.metric} ({entry.mode}); heads: {entry.heads or 'none'}; fixed: {entry.fixed or 'none'}"
        )
        for name, preset in entry.presets.items():
            grid = entry.grid_for(name)
            size = grid_size(grid)
            sweep = " x ".join(f"{k} {values}" for k, values in grid.items())
            share = f", a rung passes 1/{preset.reduction_factor} on" if preset.reduction_factor else ""
            print(f"  {name}: {preset.epochs} epochs, ASHA grace {preset.grace_period}{share}; grid of {size}: {sweep}")
        ranges = entry.optuna_space(entry.grid_for("paper"))
        print("  optuna (paper): " + ", ".join(f"{k} {r}" for k, r in ranges.items()))


def _precisions_here() -> str:
    from lstm_ae.precision import cpu_name, unavailable

    cpu = cpu_name()
    bf16 = "runs bf16 (--set precision=bf16)" if unavailable("bf16", "cpu") is None else "has no native bf16: fp32 only"
    return (
        f"fp32 by default; bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX) or a GPU with it, fp16 a GPU; "
        f"this machine's CPU ({cpu}) {bf16} (docs/performance.md#precision-parity)"
    )


def run_command(args) -> None:
    from sweeps import runner

    sweep_dir = runner.start(_sweep_of(args), args.storage, args.name, args.address, not args.no_dashboard)
    _finish(sweep_dir, args.no_report)


def _sweep_of(args):
    """The Sweep the options describe: each option a field of the same name, but for the three said otherwise."""
    from sweeps.sweep import Sweep

    said = {
        "early_stop": not args.no_early_stop,
        "overrides": {**dict(args.set), **({"precision": [args.precision]} if args.precision else {})},
        "loggers": list(dict.fromkeys(args.logger)),
    }
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Sweep) if hasattr(args, f.name)}
    return Sweep(**{**given, **said})


def resume_command(args) -> None:
    from sweeps import runner

    sweep_dir = runner.resume(args.path, args.corrupt_checkpoint, args.data, args.address, not args.no_dashboard)
    _finish(sweep_dir, args.no_report, args.data)


def report_command(args) -> None:
    from sweeps import storage
    from sweeps.report import write_report

    sweep_dir = storage.absolute(args.path)
    written = write_report(sweep_dir, args.top, args.data, args.format, args.out)
    print(f"report: {written}")
    _fail_if_every_trial_failed(storage.parent_and_name(written)[0], written)


def _finish(sweep_dir: str, no_report: bool, data: str | None = None) -> None:
    """After a sweep's run: its summary, its report, and whether every trial failed."""
    from sweeps.errors import Interrupted
    from sweeps.report import write_report

    try:
        _summary(sweep_dir)
        written = None if no_report else write_report(sweep_dir, data=data)
        if written:
            print(f"report: {written}")
        _fail_if_every_trial_failed(sweep_dir, written)
    except KeyboardInterrupt as stop:
        raise Interrupted(
            f"interrupted after the sweep's run: the sweep is complete and saved; "
            f"write its report with sweeps report {sweep_dir}",
            signals.received(stop),
        ) from None


def _fail_if_every_trial_failed(folder: str, written: str | None) -> None:
    """TrialsFailed where every trial in the trials table of `folder` errored (the report, if `written`, says it too)."""
    from sweeps import collect, storage
    from sweeps.errors import TrialsFailed
    from sweeps.report import all_failed

    if failed := all_failed(storage.read_parquet(storage.join(folder, collect.TRIALS_FILE))):
        raise TrialsFailed(f"{failed}: see {written}" if written else failed)


def evaluate_command(args) -> None:
    import json

    from sweeps import evaluate
    from sweeps.evaluate import BASELINE_SAID

    trained = evaluate.load(args.checkpoint)
    splits = evaluate.splits_of(trained, args.data)
    metrics = evaluate.metrics(trained, splits, args.split, args.precision)
    if args.json:
        print(json.dumps({**metrics, "precision": args.precision}))
        return
    count = len(getattr(splits, args.split))
    best = (
        f" (the best up to the checkpoint's epoch {trained.checkpoint_epoch})"
        if trained.checkpoint_epoch != trained.epoch
        else ""
    )
    print(
        f"{args.checkpoint}: {trained.data['experiment']}, epoch {trained.epoch}{best}, on the {args.split} split ({count} sequences)"
    )
    print(f"  under {args.precision} (trained in {evaluate.trained_precision(trained)})")
    for name, value in metrics.items():
        print(f"  {name:<18} {value:.6g}")
    print(f"  ({BASELINE_SAID})")


def status_command(args) -> None:
    import json
    import time

    from sweeps import status, storage

    sweep_dir = storage.absolute(args.path)
    try:
        while True:
            state = status.read(sweep_dir)
            print(json.dumps(status.as_json(state)) if args.json else status.text(state), flush=True)
            if args.watch is None or state.done:
                return
            time.sleep(args.watch)
            if not args.json:
                print()
    except KeyboardInterrupt as stop:  # Ctrl-C leaves the watch, whether it was reading or waiting: not a failure
        if args.watch is None or signals.received(stop) != signal.SIGINT:
            raise


def bench_command(args) -> int:
    from sweeps import bench as benchmark

    return benchmark.main(quick=args.quick, out=args.out, device=args.device, only=args.measure)


def _summary(sweep_dir: str) -> None:
    from sweeps import status

    print(status.text(status.read(sweep_dir)))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lstm-ae-sweeps")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.1 and 86400, got {text!r}")
    return value


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


class _WithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default where it has one worth saying (not None, not a flag's False)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sweeps", description="LSTM autoencoder sweeps on Ray Tune.")
    top.add_argument("--version", action="version", version=f"sweeps {_version()}")
    commands = top.add_subparsers(required=True, metavar="COMMAND")
    for add in (
        _list_parser,
        _run_parser,
        _resume_parser,
        _report_parser,
        _evaluate_parser,
        _status_parser,
        _bench_parser,
    ):
        add(commands)
    return top


def _command(commands, name: str, handler, help: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, formatter_class=_WithDefaults, help=help)
    command.set_defaults(command=handler)
    return command


def _list_parser(commands) -> None:
    _command(commands, "list", list_command, "the experiments, their presets and search spaces")


def _run_parser(commands) -> None:
    from sweeps.loggers import LOGGERS
    from sweeps.sweep import STORAGE, Sweep

    default = {f.name: f.default for f in dataclasses.fields(Sweep)}  # the options' defaults are the Sweep's
    runner = _command(commands, "run", run_command, "run an experiment's sweep")
    runner.add_argument("experiment", metavar="NAME", help="an experiment of `sweeps list`")
    runner.add_argument(
        "--preset", default=default["preset"], help="quick (minutes on a laptop) or paper (the study's budgets)"
    )
    runner.add_argument(
        "--search", default=default["search"], help="grid (the study's grid) or optuna (seeded TPE over its ranges)"
    )
    runner.add_argument(
        "--num-samples", type=int, help="optuna: trials (default: the grid's size); grid: repeats with other seeds"
    )
    runner.add_argument("--no-early-stop", action="store_true", help="run every trial to its budget (no ASHA)")
    runner.add_argument(
        "--scheduler",
        default=default["scheduler"],
        choices=SCHEDULERS,
        help="early stopping: " + "; ".join(f"{name}: {words}" for name, words in SCHEDULERS.items()),
    )
    runner.add_argument(
        "--reduction-factor",
        type=int,
        metavar="N",
        help="early stopping: a rung passes 1/N of its trials on, and the rungs are the grace period x N, x N^2, ... "
        f"(default: {', '.join(f'{k} {v}' for k, v in REDUCTION_FACTORS.items())})",
    )
    runner.add_argument(
        "--order",
        default=default["order"],
        choices=ORDERS,
        help="the order a grid's trials start in: shuffled by --seed, or the grid's own",
    )
    runner.add_argument(
        "--cpus-per-trial",
        type=float,
        default=default["cpus_per_trial"],
        help="CPUs each trial gets (torch threads follow)",
    )
    runner.add_argument(
        "--gpus-per-trial",
        type=float,
        default=default["gpus_per_trial"],
        help="GPUs each trial gets: 1/k packs k trials on a GPU",
    )
    runner.add_argument(
        "--max-concurrent", type=int, help="trials running at once (default: as many as resources allow)"
    )
    runner.add_argument("--storage", default=STORAGE, help="folder or URI (s3://, gs://, shared NFS path) for results")
    runner.add_argument(
        "--name", help="the sweep's folder name under --storage (default: experiment-preset-search-time)"
    )
    _ray_options(runner, "join a running Ray cluster (`auto`, or host:port); default: start a local one")
    runner.add_argument("--data", help="MNIST root folder, or the S&P 500 CSV (plain or gzipped)")
    runner.add_argument("--seed", type=int, default=default["seed"], help="data split, initial weights and batch order")
    runner.add_argument("--epochs", type=int, help="epochs per trial (default: the preset's)")
    runner.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="EPOCHS",
        help="epochs between a trial's checkpoints, its last epoch always one (default: the preset's)",
    )
    runner.add_argument(
        "--grace-period",
        type=int,
        metavar="EPOCHS",
        help="epochs every trial runs before early stopping may stop it: the first rung "
        "(default: the preset's, `sweeps list`)",
    )
    runner.add_argument(
        "--set",
        type=_hyperparameter,
        action="append",
        default=[],
        metavar="NAME=V1[,V2...]",
        help="fix a hyperparameter (one value) or sweep it over these values, e.g. --set lr=1e-3,3e-3",
    )
    runner.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="autocast of every trial (the same as --set precision=...); fp16 needs GPUs (default: the experiment's)",
    )
    runner.add_argument(
        "--logger",
        action="append",
        default=[],
        choices=LOGGERS,
        help="also log every epoch to TensorBoard, Weights & Biases or MLflow (repeatable; off by default)",
    )
    _no_report_option(runner)


def _resume_parser(commands) -> None:
    from sweeps.sweep import FALLBACKS

    resumer = _command(commands, "resume", resume_command, "continue an interrupted sweep")
    resumer.add_argument("path", help="the sweep's folder")
    _ray_options(resumer, "join a running Ray cluster instead of starting a local one")
    resumer.add_argument(
        "--corrupt-checkpoint",
        default=FALLBACKS[0],
        metavar="|".join(FALLBACKS),
        help="where a trial whose last checkpoint cannot be read goes on from",
    )
    resumer.add_argument("--data", help="where the sweep's data is now, if it moved since `sweeps run`")
    _no_report_option(resumer)


def _ray_options(parser, address_help: str) -> None:
    """Where the sweep runs: a cluster, or the local Ray this command starts, with or without its dashboard."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--address", help=address_help)
    where.add_argument(
        "--no-dashboard",
        action="store_true",
        help="start the local Ray without its dashboard: about 4 CPU-seconds less per start (scripts, CI)",
    )


def _report_parser(commands) -> None:
    from sweeps.figures import FORMATS
    from sweeps.report import TOP_TRIALS

    reporter = _command(commands, "report", report_command, "figures and report.md of a sweep, from its files")
    reporter.add_argument("path", help="the sweep's folder")
    reporter.add_argument("--top", type=int, default=TOP_TRIALS, help="trials in the table of all trials")
    reporter.add_argument("--data", help="where the sweep's data is now, if it moved (a folder copied from a cluster)")
    reporter.add_argument("--format", default=FORMATS[0], choices=FORMATS, help="the figures' file format")
    reporter.add_argument(
        "--out",
        help="publish the report in this folder instead (report.md, figures, tables and the best model.pt: "
        "all that `sweeps evaluate` needs to check it, e.g. for results/showcase/)",
    )


def _evaluate_parser(commands) -> None:
    from sweeps.evaluate import PRECISION, SPLITS

    evaluator = _command(
        commands, "evaluate", evaluate_command, "a trial checkpoint's metrics on the test (or validation) split"
    )
    evaluator.add_argument("checkpoint", help="a model.pt, or the checkpoint_* folder that holds one")
    evaluator.add_argument("--data", help="where the checkpoint's data is now (default: where it was trained)")
    evaluator.add_argument("--split", default=SPLITS[0], choices=SPLITS, help="which split")
    evaluator.add_argument(
        "--precision",
        default=PRECISION,
        choices=PRECISIONS,
        help=f"autocast to evaluate under: {PRECISION}, the same on every machine, whatever the checkpoint trained "
        "in (bf16 needs a CPU or GPU that has it)",
    )
    evaluator.add_argument(
        "--json", action="store_true", help="one JSON object of the metrics (and precision) on stdout"
    )


def _status_parser(commands) -> None:
    stat = _command(
        commands, "status", status_command, "trials finished, running, stopped early or errored, and the best so far"
    )
    stat.add_argument("path", help="the sweep's folder or URI")
    stat.add_argument(
        "--watch",
        type=_seconds,
        nargs="?",
        const=30.0,
        metavar="SECONDS",
        help="print it again every SECONDS (default 30) until the sweep ends; Ctrl-C leaves",
    )
    stat.add_argument("--json", action="store_true", help="one JSON object per print, on stdout")


def _bench_parser(commands) -> None:
    from sweeps.bench import DEVICES, MEASURES, slug

    bencher = _command(
        commands,
        "bench",
        bench_command,
        "overheads of the trainer and Ray Tune, early stopping, threads, memory, pixel speed: ratios measured side by side",
    )
    bencher.add_argument(
        "--quick", action="store_true", help="small sizes: a few minutes on 2 cores (the full run: about 40)"
    )
    bencher.add_argument("--out", help="folder for bench.parquet and machine.json (default: results/bench-<time>)")
    bencher.add_argument(
        "--device",
        default=DEVICES[0],
        choices=DEVICES,
        help="cuda: the pixel measures on a GPU (fp32/bf16/fp16) and 1/2/4/8 trials packed on it",
    )
    bencher.add_argument(
        "--measure",
        action="append",
        metavar="NAME",
        help=f"run only this measure (repeatable): {', '.join(slug(m.name) for m in MEASURES)} "
        "(default: all for the device)",
    )


def _no_report_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--no-report", action="store_true", help="do not write the report at the end")


if __name__ == "__main__":
    sys.exit(main())
