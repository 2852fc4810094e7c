"""The registry and the checks a sweep goes through before Ray starts (no Ray cluster is started here)."""

import json
import math
import os
import pickle
import re
import subprocess
import sys
import time

import pytest
from ray import tune

from sweeps import __main__, storage
from sweeps.__main__ import main
from sweeps.errors import SweepError
from sweeps.experiments import EXPERIMENTS
from sweeps.folder import claim, tuner_saved_whole
from sweeps.runner import build_datasets, prepare
from sweeps.sweep import Sweep, command_line, load_sweep
from sweeps.tuner import param_space
from tests.sweeping import sweeps_cli


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_entry_is_complete(name):
    entry = EXPERIMENTS[name]
    assert set(entry.presets) == {"quick", "paper"}
    assert entry.mode in ("min", "max") and entry.metric.startswith("val_")
    for preset in entry.presets.values():
        assert 0 < preset.grace_period <= preset.epochs and preset.checkpoint_every >= 1
    assert set(entry.optuna_space(entry.grid)) == set(entry.grid)
    Sweep(name).validate()
    Sweep(name, preset="paper", search="optuna").validate()


def test_the_study_grids():
    synthetic = param_space(Sweep("synthetic", preset="paper"))
    assert synthetic["batch_size"] == tune.grid_search([32, 64]) and synthetic["hidden_size"] == tune.grid_search(
        [10, 25, 40]
    )
    assert synthetic["epochs"] == 1000 and synthetic["seed"] == 0
    pixels = param_space(Sweep("mnist-pixels-classify", preset="paper"))
    assert pixels["batch_size"] == 128 and pixels["grad_clip"] == 1.0
    assert pixels["recon_weight"] == tune.grid_search([0.5, 0.7])


def test_optuna_ranges():
    space = param_space(Sweep("synthetic", search="optuna"))
    assert (space["hidden_size"].lower, space["hidden_size"].upper) == (10, 50)  # randint: 10..49
    assert (space["lr"].lower, space["lr"].upper) == (1e-4, 1e-2)
    assert (space["grad_clip"].lower, space["grad_clip"].upper) == (0.0, 5.0)
    assert space["batch_size"].categories == [32, 64, 128]
    rows = param_space(Sweep("mnist-rows", search="optuna"))
    assert (rows["hidden_size"].lower, rows["hidden_size"].upper) == (20, 129)
    assert param_space(Sweep("snp500-predict", search="optuna"))["normalize"].categories == ["study", "first"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_reports_optuna_distributions_are_those_rays_search_makes(name):
    from ray.tune.search.optuna import OptunaSearch

    ranges = EXPERIMENTS[name].optuna_space(EXPERIMENTS[name].grid_for("paper"))
    by_ray = OptunaSearch.convert_search_space({k: r.to_tune() for k, r in ranges.items()})
    assert {k: r.to_optuna() for k, r in ranges.items()} == by_ray


def test_one_rule_says_which_value_is_better():
    import pandas as pd

    from sweeps.experiments import best_first, score

    assert score(0.1, "min") > score(0.2, "min") and score(0.9, "max") > score(0.8, "max")
    assert score(math.nan, "max") == score(math.inf, "min") == -math.inf  # a diverged epoch never wins
    frame = pd.DataFrame({"v": [0.2, math.nan, 0.1]})
    assert best_first(frame, "v", "min").v.tolist()[:2] == [0.1, 0.2]
    assert best_first(frame, "v", "max").v.tolist()[:2] == [0.2, 0.1] and math.isnan(
        best_first(frame, "v", "max").v.iloc[-1]
    )


def test_the_running_best_ignores_diverged_epochs():
    nan = float("nan")
    by_loss, by_accuracy = EXPERIMENTS["synthetic"], EXPERIMENTS["mnist-rows-classify"]
    assert by_loss.better(0.2, 0.1) == 0.1 and by_accuracy.better(0.2, 0.1) == 0.2
    assert by_loss.better(0.2, nan) == 0.2 and by_loss.better(nan, 0.3) == 0.3
    assert by_loss.running_best == "best_val_mse" and by_accuracy.running_best == "best_val_accuracy"
    epochs = [{"val_mse": v} for v in (0.3, nan, 0.4, 0.1)]
    assert by_loss.running_bests(epochs) == [0.3, 0.3, 0.3, 0.1] and by_loss.running_bests([]) == []


def test_set_pins_or_sweeps_a_hyperparameter():
    sweep = Sweep("synthetic", overrides={"hidden_size": [16], "lr": [1e-3, 3e-3, 1e-2], "recon_weight": [0.5]})
    space = param_space(sweep)
    assert space["hidden_size"] == 16 and "hidden_size" not in sweep.grid()
    assert space["lr"] == tune.grid_search([1e-3, 3e-3, 1e-2])
    assert space["recon_weight"] == 0.5


def test_grid_repeats_differ_by_seed():
    assert param_space(Sweep("synthetic", num_samples=3, seed=7))["seed"] == tune.grid_search([7, 8, 9])
    # Optuna's --num-samples counts trials, which share the seed: what status, report and folder names show.
    assert "seed" not in Sweep("synthetic", search="optuna", num_samples=3).swept()
    assert param_space(Sweep("synthetic", search="optuna", num_samples=3, seed=7))["seed"] == 7


def test_a_grid_runs_every_point_once_in_an_order_the_seed_fixes():
    sweep = Sweep("synthetic", num_samples=2, seed=7)
    order = sweep.trial_order()
    every = [{"seed": seed, **{k: c[k] for k in sweep.grid()}} for seed in (7, 8) for c in sweep.configs()]
    key = lambda point: sorted(point.items())  # noqa: E731
    assert len(order) == 48 and sorted(order, key=key) == sorted(every, key=key)
    assert order == Sweep("synthetic", num_samples=2, seed=7).trial_order()
    assert order != every and order != Sweep("synthetic", num_samples=2, seed=8).trial_order()
    in_grid_order = Sweep("synthetic", num_samples=2, seed=7, order="grid")
    assert in_grid_order.trial_order() == every and "--order grid" in command_line(in_grid_order)
    assert "--order" not in command_line(sweep)


def test_an_order_that_is_not_a_grids_is_refused():
    with pytest.raises(SweepError, match="unknown --order 'random': choose shuffled or grid"):
        Sweep("synthetic", order="random").validate()
    with pytest.raises(SweepError, match="--order grid orders a grid's trials: drop it, or use --search grid"):
        Sweep("synthetic", search="optuna", order="grid").validate()


@pytest.mark.parametrize(
    "sweep, message",
    [
        (Sweep("nope"), "unknown experiment 'nope'"),
        (Sweep("synthetic", preset="huge"), "unknown preset 'huge'"),
        (Sweep("synthetic", search="random"), "unknown search"),
        (Sweep("synthetic", overrides={"lr": [0.0]}), "lr must be positive"),
        (Sweep("synthetic", overrides={"lr": [-1e-3, 1e-3]}), "lr must be positive"),
        (Sweep("synthetic", overrides={"hidden_size": [0]}), "hidden_size must be a whole number of at least 1"),
        (Sweep("synthetic", overrides={"hidden_size": [2.5]}), "hidden_size must be a whole number"),
        (Sweep("synthetic", overrides={"batch_size": [0]}), "batch_size must be a whole number of at least 1"),
        (Sweep("synthetic", overrides={"recon_weight": [1.5]}), "recon_weight must be within"),
        (Sweep("synthetic", overrides={"dropout": [0.1]}), "unknown hyperparameter 'dropout'"),
        (Sweep("synthetic", epochs=0), "--epochs must be 1 to 1,000,000"),
        (Sweep("synthetic", epochs=10**20), "--epochs must be 1 to 1,000,000"),
        (Sweep("synthetic", checkpoint_every=0), "--checkpoint-every must be 1 to 1,000,000 epochs"),
        (Sweep("synthetic", grace_period=0), "--grace-period must be 1 to the budget of 24 epochs, got 0"),
        (Sweep("synthetic", epochs=10, grace_period=11), "--grace-period must be 1 to the budget of 10 epochs"),
        (Sweep("synthetic", scheduler="hyperband", grace_period=2), "HyperBand's brackets follow from the budget"),
        (Sweep("synthetic", grace_period=5, early_stop=False), "--no-early-stop turns off: drop one"),
        (Sweep("synthetic", num_samples=10**9), "--num-samples must be 1 to 1,000,000"),
        (Sweep("synthetic", seed=2**40), "--seed must be 0 to 2"),
        (Sweep("synthetic", seed=-1), "--seed must be 0 to 2"),
        (Sweep("synthetic", cpus_per_trial=math.inf), "--cpus-per-trial must be positive and finite"),
        (Sweep("synthetic", gpus_per_trial=math.inf), "--gpus-per-trial must be 0, 1/k"),
        (Sweep("synthetic", gpus_per_trial=math.nan), "--gpus-per-trial must be 0, 1/k"),
        (Sweep("synthetic", overrides={"lr": [math.inf]}), "lr must be positive and finite"),
        (Sweep("synthetic", overrides={"lr": ["fast"]}), "lr must be a number, got 'fast'"),
        (Sweep("synthetic", overrides={"batch_size": [32.5]}), "batch_size must be a whole number"),
        (Sweep("synthetic", overrides={"gate_bias": ["zeros"]}), "gate_bias must be one of default, forget1, chrono"),
        (Sweep("synthetic", overrides={"encoder_cell": ["gru"]}), "encoder_cell must be one of lstm, layernorm"),
        (Sweep("synthetic", overrides={"schedule": ["step"]}), "schedule must be one of constant, cosine, plateau"),
        (Sweep("synthetic", overrides={"precision": ["fp16"]}), "precision fp16 runs on CUDA GPUs only"),
        (Sweep("synthetic", gpus_per_trial=0.3), "--gpus-per-trial must be 0, 1/k"),
        (Sweep("synthetic", gpus_per_trial=1.5), "--gpus-per-trial must be 0, 1/k"),
        (Sweep("synthetic", cpus_per_trial=0), "--cpus-per-trial must be positive"),
    ],
)
def test_impossible_sweeps_are_refused(sweep, message):
    with pytest.raises(SweepError, match=message):
        sweep.validate()


@pytest.mark.parametrize("gpus", [0, 0.5, 0.25, 0.125, 1, 2])
def test_gpu_shares_that_pack_whole_trials(gpus):
    Sweep("synthetic", gpus_per_trial=gpus).validate()


def test_data_problems_are_sweep_errors(tmp_path):
    with pytest.raises(SweepError, match="needs --data"):
        build_datasets(Sweep("snp500-predict"))
    with pytest.raises(SweepError, match="not found"):
        build_datasets(Sweep("snp500-predict", data=str(tmp_path / "missing.csv")))
    with pytest.raises(SweepError, match="MNIST files not found"):
        build_datasets(Sweep("mnist-rows", data=str(tmp_path)))


def test_data_is_built_once_per_value_of_the_data_hyperparameters(stocks_csv):
    datasets = build_datasets(Sweep("snp500-predict", data=str(stocks_csv)))
    assert set(datasets) == {("study",), ("first",)}
    assert datasets[("first",)].meta["normalizer"]["kind"] == "first"
    assert list(build_datasets(Sweep("synthetic"))) == [(10_000,)]  # the number of signals, pinned


def test_sweep_folder_names_stay_inside_storage(tmp_path):
    for name in ("../x", "a/b", "/abs", ".hidden", "..", "", "x" * 129):
        with pytest.raises(SweepError, match="must be 1 to 128 letters"):
            prepare(Sweep("synthetic"), str(tmp_path), name)
    assert not any(tmp_path.iterdir())


def test_a_storage_path_inside_a_sweep_is_refused(tmp_path):
    sweep = Sweep("synthetic")
    sweep_dir, _ = prepare(sweep, str(tmp_path), "outer")
    claim(sweep, sweep_dir)
    before = sorted(p.name for p in (tmp_path / "outer").iterdir())
    for inside in (tmp_path / "outer", tmp_path / "outer" / "deeper"):
        with pytest.raises(SweepError, match=f"--storage {inside} is inside the sweep {tmp_path / 'outer'}"):
            prepare(Sweep("synthetic"), str(inside), "inner")
    assert sorted(p.name for p in (tmp_path / "outer").iterdir()) == before


def test_an_existing_sweep_is_not_overwritten(tmp_path):
    sweep = Sweep("synthetic")
    sweep_dir, _ = prepare(sweep, str(tmp_path), "once")
    claim(sweep, sweep_dir)
    before = (tmp_path / "once" / "sweep.json").read_bytes()
    with pytest.raises(SweepError, match="already holds a sweep"):
        prepare(Sweep("synthetic", seed=3), str(tmp_path), "once")
    assert (tmp_path / "once" / "sweep.json").read_bytes() == before


def test_unwritable_storage(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the storage folder should be")
    with pytest.raises(storage.StorageError, match="cannot write to --storage"):
        prepare(Sweep("synthetic"), str(blocked), "x")
    with pytest.raises(storage.StorageError, match="cannot write to --storage /proc/results"):
        prepare(Sweep("synthetic"), "/proc/results", "x")  # not even root can create folders there


def test_cli_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["run", "nope", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sweeps: error: unknown experiment 'nope'") and "\n" not in err
    assert main(["run", "synthetic", "--set", "lr=0", "--storage", str(tmp_path)]) == 2
    assert "lr must be positive" in capsys.readouterr().err
    assert main(["status", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_reader_that_leaves_ends_the_command_quietly():
    """`sweeps list | head -1`: no "Broken pipe" error blamed on the storage, no traceback; the status of a command
    ended by SIGPIPE, as the shell reports for others."""
    command = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    command.stdout.close()  # the reader is gone before the first line
    assert command.stderr.read() == "" and command.wait(timeout=60) == 141


def test_the_command_line_lists_and_parses_without_importing_ray():
    """Ray takes seconds to import: `sweeps list`, `--help` and a refused command answer without it."""
    code = (
        "import sys; from sweeps.__main__ import main, parser; main(['list']); "
        "[parser().parse_args([c, 'x']) for c in ('report', 'status', 'evaluate', 'resume')]; "
        "print('ray' in sys.modules, 'matplotlib' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "False False"


def test_cli_as_a_user_runs_it():
    done = sweeps_cli("run", "synthetic", "--bogus")
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr
    listing = sweeps_cli("list")
    assert listing.returncode == 0, listing.stderr
    listing = listing.stdout
    for name in EXPERIMENTS:
        assert name in listing


@pytest.mark.parametrize("command, entry", [(["run", "synthetic"], "start"), (["resume", "somewhere"], "resume")])
def test_no_dashboard_reaches_the_runner_and_is_refused_with_an_address(command, entry, monkeypatch, capsys):
    from sweeps import runner

    started = []
    monkeypatch.setattr(runner, entry, lambda *a: started.append(a[-1]))
    monkeypatch.setattr(__main__, "_finish", lambda *a: None)
    assert main([*command, "--no-dashboard"]) == 0 and main(command) == 0 and started == [False, True]
    with pytest.raises(SystemExit) as refused:
        main([*command, "--no-dashboard", "--address", "auto"])
    assert refused.value.code == 2
    assert "argument --address: not allowed with argument --no-dashboard" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["resume", "report", "status"])
def test_folders_that_are_not_sweeps_are_named(tmp_path, capsys, command):
    for folder in (tmp_path / "missing", tmp_path):
        assert main([command, str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err
            == f"sweeps: error: {folder} is not a sweep folder (no sweep.json): pass the folder `sweeps run` printed"
        )
    assert not any(tmp_path.iterdir())


def test_an_unknown_checkpoint_fallback_is_refused_before_ray_starts(tmp_path, capsys):
    sweep = Sweep("synthetic")
    claim(sweep, prepare(sweep, str(tmp_path), "s")[0])
    assert main(["resume", str(tmp_path / "s"), "--corrupt-checkpoint", "latest"]) == 2
    assert "unknown --corrupt-checkpoint 'latest': choose previous or scratch" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["sweep.json"]


def test_more_gpus_per_trial_than_the_machine_has(tmp_path):
    done = sweeps_cli("run", "synthetic", "--gpus-per-trial", "64", "--storage", tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert re.fullmatch(
        r"sweeps: error: each trial asks for 64 GPUs but this machine has \d+: "
        r"lower --gpus-per-trial, or run on a cluster with --address",
        done.stderr.strip().splitlines()[-1],
    )
    assert not any(tmp_path.iterdir())


def test_of_two_runs_given_one_name_at_once_exactly_one_claims_the_folder(tmp_path):
    first, second = Sweep("synthetic"), Sweep("synthetic", seed=1)
    folders = [
        prepare(sweep, str(tmp_path), "same")[0] for sweep in (first, second)
    ]  # both checked before either claims
    claim(first, folders[0])
    with pytest.raises(SweepError, match="already holds a sweep"):
        claim(second, folders[1])
    assert json.loads((tmp_path / "same" / "sweep.json").read_text())["sweep"]["seed"] == 0


def _create_once(path, barrier):
    barrier.wait()
    try:
        storage.create(path, b"mine")
        return True
    except FileExistsError:
        return False


def test_the_claim_is_exclusive_between_processes(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")  # the children only create a file: fork is safe, and quick
    with context.Manager() as manager:
        barrier = manager.Barrier(6)
        with context.Pool(6) as pool:
            won = pool.starmap(_create_once, [(str(tmp_path / "sweep.json"), barrier)] * 6)
    assert sorted(won) == [False] * 5 + [True]


def test_a_folder_that_is_not_a_sweep_is_never_taken_over(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "trials.parquet").write_bytes(b"someone else's table")
    assert main(["run", "synthetic", "--storage", str(tmp_path), "--name", "mine"]) == 2
    assert "exists and is not a sweep folder: choose another --name" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["trials.parquet"] and (
        folder / "trials.parquet"
    ).read_bytes() == b"someone else's table"


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {"RAY_ADDRESS": "127.0.0.1:1"}, "no Ray cluster answers at 127.0.0.1:1 (RAY_ADDRESS in the environment"),
        (["--address", "127.0.0.1:notaport"], {}, "--address 127.0.0.1:notaport is not a Ray address"),
        (["--storage", "nosuchscheme://bucket/x"], {}, "cannot use nosuchscheme://bucket/x as storage"),
        (["--cpus-per-trial", "inf"], {}, "--cpus-per-trial must be positive and finite"),
        (["--cpus-per-trial", "512"], {}, "each trial asks for 512 CPUs but this machine has"),
        (["--seed", str(2**40)], {}, "--seed must be 0 to 2**32 - 1"),
        (["--precision", "fp16"], {}, "precision fp16 runs on CUDA GPUs only"),
        (["--num-samples", "1000000"], {}, "24,000,000 trials asked for (a grid of 24 points, 1,000,000 times)"),
        ([], {"TMPDIR": "/tmp/" + "long" * 10}, "(TMPDIR) is too long for the Unix sockets Ray makes in it"),
        ([], {"RAY_TMPDIR": "/nonexistent"}, "the temporary folder /nonexistent (RAY_TMPDIR) is not a writable folder"),
        (
            [],
            {"HOME": "/proc/nohome"},
            "Ray keeps its dashboard token in /proc/nohome/.ray/auth_token, and /proc/nohome",
        ),
    ],
    ids=[
        "stale-RAY_ADDRESS",
        "port",
        "scheme",
        "inf-cpus",
        "too-many-cpus",
        "seed",
        "fp16-on-cpu",
        "absurd-num-samples",
        "long-TMPDIR",
        "missing-RAY_TMPDIR",
        "unwritable-HOME",
    ],
)
def test_bad_options_and_environment_stop_in_seconds_before_anything_is_written(
    tmp_path, monkeypatch, capsys, args, env, message
):
    for variable in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(variable, raising=False)  # the machine's own, which would take the cases' place
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    storage_args = [] if "--storage" in args else ["--storage", str(tmp_path / "results")]
    started = time.monotonic()
    assert main(["run", "synthetic", *storage_args, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("sweeps: error:") and err.count("\n") == 1, err
    assert time.monotonic() - started < 30  # Ray's own retries on a dead address take minutes
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_stale_environment_stops_the_real_command_in_one_line(tmp_path):
    """The same checks as a user meets them: the installed command, its own process and environment."""
    done = sweeps_cli(
        "run",
        "synthetic",
        "--storage",
        tmp_path / "results",
        timeout=60,
        env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"},
    )
    assert done.returncode == 2 and done.stdout == "", done.stderr[-2000:]
    assert done.stderr.startswith(
        "sweeps: error: no Ray cluster answers at 127.0.0.1:1 (RAY_ADDRESS in the environment"
    )
    assert done.stderr.count("\n") == 1 and not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "damage",
    [b"{not json", b'{"sweep": {"experiment": "synthetic", "colour": "blue"}}', b'{"sweep": {"experiment": "gone"}}'],
    ids=["not-json", "unknown-field", "gone-experiment"],
)
@pytest.mark.parametrize("command", ["resume", "report", "status"])
def test_a_damaged_sweep_record_is_named(tmp_path, capsys, command, damage):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "sweep.json").write_bytes(damage)
    assert main([command, str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sweeps: error: {folder / 'sweep.json'}") and "\n" not in err


def test_a_tuner_pickle_cut_short_empty_or_missing_is_told_from_a_whole_one(tmp_path):
    """What resume saves again (folder.tuner_saved_whole); the fault tests resume such a sweep."""
    whole = pickle.dumps({"param_space": {"lr": [1e-3, 1e-2]}, "name": "s" * 500}, protocol=pickle.HIGHEST_PROTOCOL)
    for left, is_whole in ((whole, True), (whole[: len(whole) // 2], False), (whole[:-1], False), (b"", False)):
        (tmp_path / "tuner.pkl").write_bytes(left)
        assert tuner_saved_whole(str(tmp_path)) is is_whole, len(left)
    (tmp_path / "tuner.pkl").unlink()
    assert tuner_saved_whole(str(tmp_path)) is False


def test_checkpoint_every_overrides_the_presets_and_is_in_the_command():
    from sweeps.sweep import command_line

    assert Sweep("synthetic").checkpoint_interval == EXPERIMENTS["synthetic"].presets["quick"].checkpoint_every
    pinned = Sweep("synthetic", checkpoint_every=7)
    assert pinned.checkpoint_interval == 7 and "--checkpoint-every 7" in command_line(pinned)


def test_set_sweeps_the_checkpoint_frequency_per_trial_in_the_grids_order():
    sweep = Sweep("synthetic", order="grid", overrides={"checkpoint_every": [4, 1, 4], "lr": [1e-2]})
    sweep.validate()
    assert param_space(sweep)["checkpoint_every"] == tune.grid_search([4, 1, 4])
    assert [point["checkpoint_every"] for point in sweep.trial_order()[:3]] == [4, 1, 4]
    assert "--set checkpoint_every=4,1,4" in command_line(sweep)
    assert param_space(Sweep("synthetic", overrides={"checkpoint_every": [3]}))["checkpoint_every"] == 3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"checkpoint_every": 5, "overrides": {"checkpoint_every": [2]}}, "say the same: give one"),
        ({"overrides": {"checkpoint_every": [0, 2]}}, "whole numbers of epochs from 1"),
        ({"overrides": {"checkpoint_every": [1.5]}}, "whole numbers of epochs from 1"),
        ({"search": "optuna", "overrides": {"checkpoint_every": [1, 2]}}, "use --search grid"),
    ],
)
def test_impossible_checkpoint_frequencies_are_refused(options, message):
    with pytest.raises(SweepError, match=message):
        Sweep("synthetic", **options).validate()


def test_the_scheduler_is_recorded_and_a_sweep_recorded_before_it_existed_keeps_rays_asha(tmp_path, capsys):
    assert Sweep("synthetic").scheduler == "promotion"
    assert "--scheduler asha" in command_line(Sweep("synthetic", scheduler="asha"))
    assert "--scheduler" not in command_line(Sweep("synthetic"))
    with pytest.raises(SweepError, match="unknown --scheduler 'fifo': choose one of promotion, asha, hyperband"):
        Sweep("synthetic", scheduler="fifo").validate()
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps({"sweep": {"experiment": "synthetic"}}))
    assert load_sweep(str(folder)).scheduler == "asha" and load_sweep(str(folder)).reduction_factor == 4
    # Promotion from before --reduction-factor: a quarter per rung, as then (a new one passes a third).
    (folder / "sweep.json").write_text(json.dumps({"sweep": {"experiment": "synthetic", "scheduler": "promotion"}}))
    assert load_sweep(str(folder)).reduction_factor == 4 and Sweep("synthetic", preset="paper").reduction_factor == 3
    # A preset may pass another share on (the demo: a quarter); a sweep of it records no option for its default.
    assert Sweep("synthetic").reduction_factor == 4 and "--reduction-factor" not in command_line(Sweep("synthetic"))
    assert "--reduction-factor 3" in command_line(Sweep("synthetic", reduction_factor=3))
    with pytest.raises(SweepError, match="--reduction-factor must be a whole number from 2 to 100, got 1"):
        Sweep("synthetic", reduction_factor=1).validate()
    with pytest.raises(SystemExit) as refused:  # argparse's own refusal of a choice it does not know
        main(["run", "synthetic", "--scheduler", "fifo"])
    assert refused.value.code == 2 and "invalid choice: 'fifo'" in capsys.readouterr().err
