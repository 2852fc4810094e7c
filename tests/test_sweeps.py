"""Real sweeps on a real local Ray, at tiny scale."""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
import ray
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from lstm_ae.data import synthetic
from sweeps import checkpoints, evaluate, runner
from sweeps.experiments import EXPERIMENTS
from sweeps.report import write_report
from sweeps.sweep import Sweep, command_line
from sweeps.trial import ship, unship
from tests.sweeping import TWO_SMALL_TRIALS, check_tables, checkpoint_dirs, free_port, sweeps_cli

pytestmark = pytest.mark.ray  # starts Ray: not in `make test-fast`


def data_for(name, mnist_root, stocks_csv):
    return {"mnist": mnist_root, "snp500": stocks_csv}.get(EXPERIMENTS[name].source)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # its own, as the command line starts one
    yield
    ray.shutdown()


def test_trials_read_the_object_stores_copy_of_the_data(local_ray):
    datasets = {(2000,): synthetic.load(n=2000)}  # big enough for the object store (small objects travel inline)
    shipped = ray.get(ray.put(ship(datasets)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = unship(shipped, {"experiment": "synthetic", "n": 2000})
    arrays = shipped[(2000,)].train
    assert not arrays.x.flags.writeable  # Ray's zero-copy view of the store, not a copy
    assert splits.train.x.data_ptr() == arrays.x.ctypes.data and splits.train.y is None
    for name, part in datasets[(2000,)].items():
        assert torch.equal(getattr(splits, name).x, part.x)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_sweep_of_every_experiment(name, local_ray, tmp_path, mnist_root, stocks_csv):
    data = data_for(name, mnist_root, stocks_csv)
    # The synthetic quick preset is the demo, on the study's 10,000 signals: 2,000 here (its own test runs it whole).
    smaller = {"n": [2000]} if "n" in EXPERIMENTS[name].data_params else {}
    sweep = Sweep(name, epochs=2, data=str(data) if data else None, overrides=smaller)
    sweep_dir = runner.start(sweep, str(tmp_path), "quick")
    trials, metrics = check_tables(sweep_dir, len(sweep.configs()))
    entry = EXPERIMENTS[name]
    assert (trials.status == "TERMINATED").all(), trials.error.tolist()
    assert trials[f"best_{entry.metric}"].notna().all() and entry.metric in metrics
    assert trials.node_id.notna().all()
    # The grid's trials ran in trial_order() (shuffled, for ASHA), each in a folder named with its values.
    ran = trials.sort_values("trial_id")
    assert [{k: row[f"config/{k}"] for k in sweep.swept()} for _, row in ran.iterrows()] == sweep.trial_order()
    assert all(f"{k}=" in Path(path).name for path in trials.path for k in sweep.swept())
    # Ray Tune's JSON and CSV results (collect reads them), not its TensorBoard files (which cost a lot per epoch).
    assert list(Path(sweep_dir).glob("*/result.json")) and not list(Path(sweep_dir).rglob("events.out.tfevents*"))
    record = json.loads((Path(sweep_dir) / "sweep.json").read_text())
    assert record["sweep"]["experiment"] == name and record["versions"]["ray"] == ray.__version__

    # A checkpoint is model.pt + metrics.parquet, read back with weights_only.
    trial = trials.sort_values("epochs").iloc[-1]

    # ASHA and Optuna rank trials on the best value of the metric so far, reported every epoch.
    results = pd.read_json(Path(trial.path) / "result.json", lines=True)
    so_far = results[entry.metric].cummin() if entry.mode == "min" else results[entry.metric].cummax()
    assert results[entry.running_best].tolist() == pytest.approx(so_far.tolist())
    state, history = checkpoints.load(checkpoint_dirs(trial.path)[-1])
    assert state["epoch"] == trial.epochs and [m["epoch"] for m in history] == list(range(1, trial.epochs + 1))
    assert state["model_config"]["hidden_size"] == trial["config/hidden_size"]
    assert set(state) >= {"model", "optimizer", "rng", "model_config"}

    # The report: every standard and experiment figure written and shown, the test metrics, the command.
    report = Path(write_report(sweep_dir)).read_text()
    for figure in ["curves", *[f"effect_{n}" for n in sweep.grid()]]:
        assert f"(figures/{figure}.png)" in report
    pictures = re.findall(r"\]\((figures/[\w-]+\.png)\)", report)
    assert len(pictures) >= len(sweep.grid()) + 1 + len(entry.figures)
    assert all((Path(sweep_dir) / p).stat().st_size > 2000 for p in pictures)
    assert "## Best trial" in report and "| test metric | value |" in report
    assert command_line(sweep, relative_paths=True) in report
    # The checkpoint the report evaluated gives the same test metrics through `sweeps evaluate`'s code.
    evaluated = re.search(r"^    sweeps evaluate (\S+)", report, re.M).group(1)
    trained = evaluate.load(Path(evaluated))
    assert {k: trained.data[k] for k in ("experiment", "preset", "seed", "path")} == {
        "experiment": name,
        "preset": "quick",
        "seed": 0,
        "path": sweep.data_path(),
    }
    assert set(trained.data["params"]) == set(entry.data_params)
    tested = evaluate.metrics(trained, evaluate.splits_of(trained))
    table = dict(re.findall(r"^\| (\w+) \| ([-\d.e]+) \|$", report, re.M))
    assert tested and all(float(table[k]) == pytest.approx(v, rel=1e-5) for k, v in tested.items())
    if name == "snp500-predict":
        _check_forecast_table(report, sweep)


def _check_forecast_table(report: str, sweep: Sweep) -> None:
    """The persistence errors in the report, computed again by hand from the test split in dollars."""
    splits = sweep.entry.load(sweep.data, sweep.seed, sweep.preset, normalize="first")
    dollars = splits.meta["normalizer"]["test"].invert(splits.test.x)[..., 0].double()
    half = dollars.shape[1] // 2
    one_step = (dollars[:, 1:] - dollars[:, :-1]).abs().mean().item()
    multi_step = (dollars[:, half:] - dollars[:, half - 1 : half]).abs().mean().item()
    rows = dict(re.findall(r"^\| (one step|multi-step) \| [\d.]+ \| ([\d.]+) \|$", report, re.M))
    assert float(rows["one step"]) == pytest.approx(one_step, abs=1e-3)
    assert float(rows["multi-step"]) == pytest.approx(multi_step, abs=1e-3)


@pytest.mark.timeout(1200)
def test_synthetic_grid_runs_24_trials_and_asha_stops_some(tmp_path):
    # The demo itself (two minutes on 2 idle cores); the timeout leaves room for a slow or shared machine.
    demo = ["run", "synthetic", "--preset", "quick", "--storage", tmp_path, "--name", "grid", "--no-report"]
    done = sweeps_cli(*demo, timeout=900, dashboard=True)
    assert done.returncode == 0, done.stderr[-3000:]
    trials, _ = check_tables(tmp_path / "grid", 24)
    assert 0 < trials.stopped_early.sum() < 24
    budget = EXPERIMENTS["synthetic"].presets["quick"].epochs
    assert (trials[~trials.stopped_early].epochs == budget).all()
    assert (trials[trials.stopped_early].epochs < budget).all()
    # The demo learns: half the error of predicting each step's mean (about 0.08) or better.
    assert trials.best_val_mse.min() <= 0.04
    assert "Ray dashboard: http://127.0.0.1:" in done.stdout
    assert "24 trials of synthetic" in done.stdout and "best so far: val_mse" in done.stdout
    assert (
        "snapshotting has been triggered" not in done.stdout + done.stderr
    )  # Tune's advice, which needs no action here
    record = json.loads((tmp_path / "grid" / "sweep.json").read_text())
    assert record["command"].startswith("sweeps run synthetic --preset quick")
    status = sweeps_cli("status", tmp_path / "grid")
    assert status.returncode == 0 and "24 of 24 trials" in status.stdout
    state = json.loads(sweeps_cli("status", tmp_path / "grid", "--json", "--watch", "1").stdout)  # done: prints once
    assert state["done"] and state["total"] == 24 and sum(state["counts"].values()) == 24
    assert (
        state["counts"]["stopped early"] == trials.stopped_early.sum()
        and state["best"]["value"] == trials.best_val_mse.min()
    )


@pytest.mark.parametrize("search", ["grid", "optuna"])
def test_max_concurrent_is_held(local_ray, tmp_path, search):
    # Trials reuse their worker: one at a time, every trial runs in the same worker process; two CPUs would give two.
    sweep = Sweep(
        "synthetic",
        search=search,
        num_samples=4 if search == "optuna" else None,
        epochs=2,
        max_concurrent=1,
        early_stop=False,
        overrides={"n": [1000], "hidden_size": [10], "batch_size": [64], "lr": [1e-3, 1e-2], "grad_clip": [0.0, 1.0]},
    )
    sweep_dir = Path(runner.start(sweep, str(tmp_path), search))
    results = [pd.read_json(path, lines=True) for path in sweep_dir.glob("trial_*/result.json")]
    assert len(results) == 4 and len({pid for r in results for pid in r.pid}) == 1


def test_optuna_search_is_seeded(local_ray, tmp_path):
    configs = []
    for name in ("a", "b"):
        sweep = Sweep(
            "synthetic",
            search="optuna",
            num_samples=4,
            epochs=1,
            seed=3,
            max_concurrent=1,
            overrides={"n": [1000], "batch_size": [64]},
        )
        trials = pd.read_parquet(Path(runner.start(sweep, str(tmp_path), name)) / "trials.parquet")
        assert len(trials) == 4
        configs.append(sorted(trials[["config/lr", "config/hidden_size", "config/grad_clip"]].values.tolist()))
    assert configs[0] == configs[1]
    assert all(10 <= h < 50 and 1e-4 <= lr <= 1e-2 for lr, h, _ in configs[0])
    # Optuna's study is in the sweep folder, for optuna-dashboard and optuna.load_study.
    journal = JournalStorage(JournalFileBackend(str(tmp_path / "a" / "optuna.journal")))
    study = optuna.load_study(study_name="a", storage=journal)
    assert len(study.trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert sorted([t.params["lr"], t.params["hidden_size"]] for t in study.trials) == sorted(
        [lr, h] for lr, h, _ in configs[0]
    )
    assert "(figures/importances.png)" in Path(write_report(str(tmp_path / "a"))).read_text()

    # A sweep whose trials have no checkpoint left still gets a report: the table, and why there is no more.
    for folder in (tmp_path / "b").glob("trial_*/checkpoint_*"):
        shutil.rmtree(folder)
    text = Path(write_report(str(tmp_path / "b"))).read_text()
    assert (
        "No trial has a usable result with a readable checkpoint yet" in text
        and "## All trials (4, best first)" in text
    )


def test_a_sweep_without_their_loggers_imports_neither_mlflow_nor_wandb(monkeypatch):
    """Tune counts a sweep's callbacks for its usage statistics by importing the logger integrations it knows, mlflow
    and wandb among them (installed here: 1.7 s of each sweep's start); with the statistics off, as the command line
    sets them, it counts nothing. (Turned on by a user, Tune's own count stays.)"""
    from ray.air._internal import usage

    from sweeps import tuner

    count = (
        "import os, sys; os.environ['RAY_USAGE_STATS_ENABLED'] = '0'; from sweeps import tuner; tuner.skip_usage_tags();"
        "from ray.air._internal import usage; usage.tag_callbacks(tuner.result_loggers());"
        "print(sorted({'mlflow', 'wandb'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", count], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
    monkeypatch.setattr(usage, "tag_callbacks", rays := usage.tag_callbacks)  # (put back after the test)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    tuner.skip_usage_tags()
    assert usage.tag_callbacks is rays


def test_tensorboard_wandb_and_mlflow_record_every_epoch_read_back_by_their_own_libraries(tmp_path):
    """One sweep with the three loggers: TensorBoard's event files read by TensorBoard, W&B in its offline mode (its
    run files on disk) found by W&B's command line, MLflow in its SQLite store in the sweep folder read by MLflow's
    client."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    loggers = ["--logger", "tensorboard", "--logger", "wandb", "--logger", "mlflow"]
    done = sweeps_cli(
        "run",
        "synthetic",
        "--storage",
        tmp_path,
        "--name",
        "logged",
        "--no-report",
        *loggers,
        *TWO_SMALL_TRIALS,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "logged" / "trials.parquet")
    assert " ".join(loggers) in json.loads((tmp_path / "logged" / "sweep.json").read_text())["command"]

    events = sorted((tmp_path / "logged").rglob("events.out.tfevents*"))
    assert len(events) == 2  # one file per trial, in its folder
    for path in events:
        accumulator = EventAccumulator(str(path.parent))
        accumulator.Reload()
        tags = accumulator.Tags()["scalars"]
        assert "ray/tune/val_mse" in tags and "ray/tune/best_val_mse" in tags
        values = [e.value for e in accumulator.Scalars("ray/tune/val_mse")]
        trial = trials[trials.path.map(lambda p: Path(p).name) == path.parent.name].iloc[0]
        assert len(values) == 2 and min(values) == pytest.approx(trial.best_val_mse, rel=1e-6)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'logged' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("logged").experiment_id])
    assert sorted(run.data.metrics["best_val_mse"] for run in runs) == pytest.approx(sorted(trials.best_val_mse))
    assert all(len(client.get_metric_history(run.info.run_id, "val_mse")) == 2 for run in runs)

    # W&B's own command finds one run per trial to upload later (its Python package no longer reads run files).
    found = subprocess.run(
        [
            str(Path(sys.executable).parent / "wandb"),
            "sync",
            "--dry-run",
            *map(str, tmp_path.glob("wandb/offline-run-*")),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "Would sync 2 run(s)" in found.stdout + found.stderr
    histories = []
    for trial_id in trials.trial_id:
        (run_file,) = tmp_path.glob(f"wandb/offline-run-*-{trial_id}/run-{trial_id}.wandb")
        histories.append(run_file.read_bytes().count(b"val_mse"))
    # A history record per epoch. At least one run: on a loaded machine W&B once left a finished run's file with its
    # header alone (its debug log: "finishing run", then nothing written), a race between W&B's writer and Ray ending
    # the logging actor, not something this project controls.
    assert max(histories) >= 2, histories


@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_a_logger_whose_package_is_missing_names_the_extra(tmp_path, logger):
    # sys.modules[name] = None is how Python blocks an import: the package looks uninstalled.
    as_if_missing = f"import sys; sys.modules[{logger!r}] = None; from sweeps.__main__ import main; sys.exit(main())"
    args = ["run", "synthetic", "--storage", tmp_path, "--logger", logger]
    done = subprocess.run([sys.executable, "-c", as_if_missing, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert (
        f"--logger {logger} needs the {logger} package: install it with `.venv/bin/pip install -e '.[{logger}]'`"
        in done.stderr
    )
    assert not any(tmp_path.iterdir())


def test_wandb_without_a_login_is_refused_before_ray_starts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    done = sweeps_cli(
        "run", "synthetic", "--storage", tmp_path, "--logger", "wandb", env={**env, "HOME": str(tmp_path)}
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--logger wandb finds no W&B login: run `wandb login`" in done.stderr and "WANDB_MODE=offline" in done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("server", [None, "closed port"])
def test_mlflow_for_remote_storage_needs_a_server_that_answers(tmp_path, server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if server:
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    done = sweeps_cli(
        "run", "synthetic", "--storage", "s3://bucket/sweeps", "--logger", "mlflow", env=env, cwd=tmp_path
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    expected = "no MLflow server answers at http://127.0.0.1:" if server else "needs MLFLOW_TRACKING_URI"
    assert expected in done.stderr and not any(tmp_path.iterdir())  # nothing written, not even ./mlflow.db


def test_a_grid_repeated_over_seeds_is_summarised_per_configuration(local_ray, tmp_path):
    sweep = Sweep(
        "synthetic",
        num_samples=3,
        seed=5,
        epochs=2,
        early_stop=False,
        overrides={"n": [1000], "hidden_size": [10], "batch_size": [64], "grad_clip": [1.0], "lr": [1e-3, 1e-2]},
    )
    sweep_dir = runner.start(sweep, str(tmp_path), "seeds")
    trials = pd.read_parquet(Path(sweep_dir) / "trials.parquet")
    assert sorted(trials["config/seed"]) == [5, 5, 6, 6, 7, 7]  # every trial's seed is in the table
    report = Path(write_report(sweep_dir)).read_text()
    rows = re.findall(r"^\| lr=([\d.e-]+) \| 3 \| ([\d.e-]+) \| ([\d.e-]+) \|$", report, re.M)
    means = trials.groupby("config/lr").best_val_mse.mean()
    stds = trials.groupby("config/lr").best_val_mse.std()
    assert [float(lr) for lr, _, _ in rows] == sorted(means.index, key=lambda lr: means[lr])  # best mean first
    for lr, mean, std in rows:
        assert float(mean) == pytest.approx(means[float(lr)], rel=1e-5) and float(std) == pytest.approx(
            stds[float(lr)], rel=1e-5
        )
    assert "(figures/seeds.png)" in report


def test_storage_and_data_paths_with_spaces_and_accents_work_end_to_end(tmp_path, stocks_csv):
    """run, status, the report and its `sweeps evaluate` command (quoted as a shell needs it), from such paths."""
    data = tmp_path / "dä ta" / "stocks é.csv"
    data.parent.mkdir()
    shutil.copy(stocks_csv, data)
    storage = tmp_path / "résultats de l'été"
    done = sweeps_cli(
        *["run", "snp500-reconstruct", "--data", data, "--storage", storage, "--name", "s", "--epochs", "1"],
        *["--set", "hidden_size=8", "--set", "lr=0.01", "--set", "grad_clip=1"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    status = sweeps_cli("status", storage / "s")
    assert status.returncode == 0 and "1 finished" in status.stdout and "no rung before the budget" in status.stdout
    report = (storage / "s" / "report.md").read_text()
    (command,) = [line.strip() for line in report.splitlines() if line.strip().startswith("sweeps evaluate")]
    again = subprocess.run(  # as a user pastes it into a shell, from the folder the report was written from
        f"{sys.executable} -m {command} --json", shell=True, capture_output=True, text=True, cwd=os.getcwd()
    )
    assert again.returncode == 0, again.stderr
    assert f"| mse | {json.loads(again.stdout)['mse']:.6g} |" in report
