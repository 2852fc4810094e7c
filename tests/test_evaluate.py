"""`sweeps evaluate`: a checkpoint alone, re-evaluated from its own record, and refused in one line where it cannot be."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from sweeps.experiments import EXPERIMENTS
from tests.precisions import LOW
from tests.sweeping import checkpoint_dirs, sweeps_cli, trial_dirs

pytestmark = pytest.mark.ray  # starts Ray: not in `make test-fast`


@pytest.fixture(scope="module")
def classified(tmp_path_factory, mnist_root):
    """A one-trial sweep of MNIST rows with a classifier, on a copy of the test MNIST files; its last checkpoint."""
    root = tmp_path_factory.mktemp("evaluate")
    data = shutil.copytree(mnist_root, root / "mnist")
    done = sweeps_cli(
        "run",
        "mnist-rows-classify",
        "--data",
        data,
        "--storage",
        root,
        "--name",
        "rows",
        "--epochs",
        "2",
        "--set",
        "hidden_size=8",
        "--set",
        "lr=0.005",
        "--set",
        "batch_size=32",
        "--set",
        f"precision={LOW}",  # bf16 where this CPU has it: evaluate's figures are fp32's all the same
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root, data, checkpoint_dirs(trial_dirs(root / "rows")[0])[-1]


def test_a_checkpoint_evaluates_to_the_reports_figures_as_json(classified):
    root, data, checkpoint = classified
    done = sweeps_cli("evaluate", checkpoint / "model.pt", "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert set(metrics) == {"loss", "mse", "ce", "accuracy", "baseline_mse", "precision"}
    assert 0 <= metrics["accuracy"] <= 1 and metrics["precision"] == "fp32"
    # The baseline: the training digits' mean image drawn for every test digit, recomputed here from the data.
    record = torch.load(checkpoint / "model.pt", weights_only=True)["data"]
    splits = EXPERIMENTS[record["experiment"]].load(data, record["seed"], record["preset"])
    mean_image = splits.train.x.mean(0)
    assert metrics["baseline_mse"] == pytest.approx(float(((splits.test.x - mean_image) ** 2).mean()), rel=1e-5)
    report = (root / "rows" / "report.md").read_text()
    assert f"| accuracy | {metrics['accuracy']:.6g} |" in report
    assert f"| baseline_mse | {metrics['baseline_mse']:.6g} |" in report and "the mean image" in report
    text = sweeps_cli("evaluate", checkpoint, "--split", "val")  # the folder works as well as its model.pt
    kept = torch.load(checkpoint / "model.pt", weights_only=True)["best"]["epoch"]
    assert (
        text.returncode == 0
        and f"mnist-rows-classify, epoch {kept}" in text.stdout
        and "on the val split" in text.stdout
        and "baseline_mse" in text.stdout
        and "mean image" in text.stdout
    )


def test_the_weights_evaluated_are_those_of_the_trials_best_epoch(classified):
    """Every checkpoint keeps the best epoch's weights: on validation they give back that epoch's logged figure."""
    _, _, checkpoint = classified
    history = pd.read_parquet(checkpoint / "metrics.parquet")
    best = history.loc[history.val_accuracy.idxmax()]
    kept = torch.load(checkpoint / "model.pt", weights_only=True)["best"]
    assert kept["epoch"] == best.epoch and kept["value"] == best.val_accuracy
    # Under the autocast it trained in, as its validation ran (bf16 where this CPU has it).
    done = sweeps_cli("evaluate", checkpoint, "--split", "val", "--json", "--precision", LOW)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] == pytest.approx(best.val_accuracy, abs=1e-6)


def test_a_report_published_with_out_is_checked_from_its_own_folder(classified, tmp_path):
    """`report --out`: what a showcase commits; its evaluate command, run from where the report was written, prints
    the report's test figures from the published model.pt alone."""
    root, _, _ = classified
    before = files_of(root / "rows")
    done = sweeps_cli("report", root / "rows", "--out", "published", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert files_of(root / "rows") == before  # only read: a read-only copy of a sweep can be published
    published = tmp_path / "published"
    assert {p.name for p in published.iterdir()} == {
        "report.md",
        "figures",
        "trials.parquet",
        "metrics.parquet",
        "model.pt",
    }
    report = (published / "report.md").read_text()
    (command,) = [line.strip() for line in report.splitlines() if line.strip().startswith("sweeps evaluate")]
    assert command.split()[2] == "published/model.pt"  # relative to where the report was written from
    again = sweeps_cli(*command.split()[1:], "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"| accuracy | {json.loads(again.stdout)['accuracy']:.6g} |" in report
    assert "(figures/digits.png)" in report and (published / "figures" / "digits.png").exists()


def files_of(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_data_that_moved_is_found_with_data(classified, tmp_path):
    _, data, checkpoint = classified
    moved = tmp_path / "elsewhere"
    shutil.move(data, moved)
    try:
        lost = sweeps_cli("evaluate", checkpoint, "--json")
        assert lost.returncode == 2 and "is not here: pass --data" in lost.stderr and lost.stderr.count("\n") == 1
        found = sweeps_cli("evaluate", checkpoint, "--json", "--data", moved)
        assert found.returncode == 0 and "accuracy" in json.loads(found.stdout)
    finally:
        shutil.move(moved, data)


def test_what_is_not_a_usable_checkpoint_is_refused_in_one_line(classified, tmp_path, stocks_csv):
    _, _, checkpoint = classified
    code = tmp_path / "code" / "model.pt"
    code.parent.mkdir()
    torch.save({"model": {}, "epoch": 1, "payload": Path("runs code when unpickled")}, code)
    truncated = tmp_path / "truncated" / "model.pt"
    truncated.parent.mkdir()
    truncated.write_bytes((checkpoint / "model.pt").read_bytes()[:500])
    mismatched = tmp_path / "mismatched" / "model.pt"
    mismatched.parent.mkdir()
    state = torch.load(checkpoint / "model.pt", weights_only=True)
    torch.save({**state, "model_config": {**state["model_config"], "hidden_size": 7}}, mismatched)
    cases = [
        (tmp_path, "is not a checkpoint"),
        (code, "not a usable checkpoint"),
        (truncated, "not a usable checkpoint"),
        (mismatched, "not a usable checkpoint: its weights do not fit its model configuration: "),
    ]
    for path, message in cases:
        done = sweeps_cli("evaluate", path)
        assert done.returncode == 2, (path, done.stderr)
        assert message in done.stderr and done.stderr.startswith("sweeps: error:") and done.stderr.count("\n") == 1
    wrong_data = sweeps_cli("evaluate", checkpoint, "--data", stocks_csv.parent)  # MNIST's checkpoint, no MNIST there
    assert wrong_data.returncode == 2 and "MNIST" in wrong_data.stderr and wrong_data.stderr.count("\n") == 1
