"""Precision that fits the hardware: what lstm_ae.precision says of a device, and a sweep or an evaluation asking for
what this machine lacks, refused in one line before Ray starts. The CPU without bf16 is made real for a process by
WITHOUT_BF16 (tests/precisions.py), so these run on CPUs of either kind."""

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from lstm_ae import precision
from lstm_ae.data import synthetic
from lstm_ae.model import LSTMAutoencoder
from lstm_ae.train import fit
from sweeps import checkpoints, cluster
from sweeps.__main__ import main
from sweeps.errors import SweepError
from sweeps.sweep import Sweep
from tests.precisions import NATIVE_BF16, WITHOUT_BF16
from tests.sweeping import sweeps_cli


def in_a_process_without_bf16(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **WITHOUT_BF16}, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_answer_is_what_a_bf16_lstm_does_here():
    lstm = torch.nn.LSTM(1, 3, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.rand(2, 5, 1))
        ran = True
    except RuntimeError:
        ran = False
    assert precision.cpu_runs_bf16() is ran is NATIVE_BF16


def test_a_cpu_without_avx512_is_told_apart_and_named():
    said = in_a_process_without_bf16(
        "from lstm_ae import precision; print(precision.cpu_runs_bf16()); print(precision.unavailable('bf16', 'cpu'))"
    )
    runs, reason = said.splitlines()
    assert runs == "False"
    assert reason.startswith("precision bf16 needs a CPU with native bf16") and precision.cpu_name() in reason
    assert reason.endswith("use fp32 (--precision fp32 or --set precision=fp32)")


def test_what_each_device_runs(monkeypatch):
    monkeypatch.setattr(precision, "cpu_runs_bf16", lambda: True)
    assert precision.runnable("cpu") == ["fp32", "bf16"]  # fp16 is CUDA's
    assert "needs a CUDA GPU" in precision.unavailable("fp16", "cpu")
    monkeypatch.setattr(precision, "cpu_runs_bf16", lambda: False)
    assert precision.runnable("cpu") == ["fp32"]
    with pytest.raises(precision.PrecisionUnavailable, match="native bf16"):
        precision.check_precision("bf16", torch.device("cpu"))


def test_a_machine_with_bf16_lets_a_bf16_sweep_start(monkeypatch):
    """The other path, simulated where the CPU lacks it: nothing refuses the sweep (Ray would start next)."""
    monkeypatch.setattr(precision, "cpu_runs_bf16", lambda: True)
    cluster.check(None, Sweep("synthetic", overrides={"precision": ["fp32", "bf16"]}))
    monkeypatch.setattr(precision, "cpu_runs_bf16", lambda: False)
    with pytest.raises(SweepError, match="needs a CPU with native bf16"):
        cluster.check(None, Sweep("synthetic", overrides={"precision": ["fp32", "bf16"]}))
    cluster.check(None, Sweep("synthetic"))  # fp32, the experiments' default, runs everywhere


def test_a_local_bf16_sweep_on_a_cpu_without_it_stops_before_ray_in_one_line(tmp_path):
    """In a process whose oneDNN stops at AVX2, as on such a CPU: the real detection, the real command line."""
    done = sweeps_cli(
        "run", "synthetic", "--set", "precision=bf16", "--storage", tmp_path / "results", "--name", "x",
        env={**os.environ, **WITHOUT_BF16},
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("sweeps: error: precision bf16 needs a CPU")
    assert precision.cpu_name() in done.stderr and "use fp32" in done.stderr
    assert not (tmp_path / "results").exists()  # nothing written, Ray never started


def test_precision_asked_with_its_own_option_is_refused_the_same_way(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_runs_bf16", lambda: False)
    assert main(["run", "synthetic", "--precision", "bf16", "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sweeps: error: precision bf16 needs a CPU")
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    """A checkpoint that records training in bf16, as a bf16 trial saves it (the weights are fp32 whatever the
    autocast); trained here in fp32, which any CPU can."""
    splits = synthetic.load(n=200, seed=0)
    model = LSTMAutoencoder.from_config({"input_size": 1, "hidden_size": 8}, seed=0)
    run = fit(model, splits, epochs=1, batch_size=32, lr=1e-2, device="cpu")
    history = [next(run)]
    state = run.state()
    state["hyperparameters"]["precision"] = "bf16"
    folder = tmp_path_factory.mktemp("bf16") / "checkpoint_000001"
    folder.mkdir()
    data = {"experiment": "synthetic", "preset": "quick", "seed": 0, "path": None, "params": {"n": 200}}
    checkpoints.save(folder, state, asdict(model.config), history, data)
    return folder / "model.pt"


def test_a_bf16_checkpoint_evaluates_in_fp32_on_a_cpu_without_bf16_and_says_so(bf16_checkpoint, monkeypatch, capsys):
    text = sweeps_cli("evaluate", bf16_checkpoint, env={**os.environ, **WITHOUT_BF16})  # such a CPU, for real
    assert text.returncode == 0, text.stderr
    assert "under fp32 (trained in bf16)" in text.stdout

    def evaluate(*args) -> tuple[int, str, str]:
        status = main(["evaluate", str(bf16_checkpoint), *args])
        out, err = capsys.readouterr()
        return status, out, err

    here = json.loads(evaluate("--json")[1])
    monkeypatch.setattr(precision, "cpu_runs_bf16", lambda: False)
    without = json.loads(evaluate("--json")[1])
    assert without["precision"] == "fp32" and without == here  # the same figures on either kind of CPU
    status, _, err = evaluate("--precision", "bf16")
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("sweeps: error: --precision bf16: precision bf16 needs a CPU with native bf16")


def test_a_bf16_checkpoint_evaluates_under_bf16_where_asked_and_the_cpu_has_it(bf16_checkpoint, capsys):
    status = main(["evaluate", str(bf16_checkpoint), "--precision", "bf16", "--json"])
    out, err = capsys.readouterr()
    if NATIVE_BF16:
        assert status == 0 and json.loads(out)["precision"] == "bf16", err
    else:
        assert status == 2 and "needs a CPU with native bf16" in err
