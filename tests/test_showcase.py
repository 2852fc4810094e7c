"""The committed showcases (results/showcase/): each one can be checked from what is committed alone, and the synthetic
ones, whose data is generated from their seed, evaluate here to the figures their reports state."""

import functools
import itertools
import re
from pathlib import Path

import pandas as pd
import pytest

from sweeps import evaluate
from sweeps.experiments import EXPERIMENTS

SHOWCASE = Path(__file__).resolve().parent.parent / "results" / "showcase"
PUBLISHED = sorted(folder for folder in SHOWCASE.iterdir() if (folder / "report.md").exists())
SYNTHETIC = [folder for folder in PUBLISHED if folder.name.startswith("synthetic")]


def test_there_are_showcases_to_check():
    assert {"synthetic", "mnist-rows-classify", "mnist-pixels-classify"} <= {folder.name for folder in PUBLISHED}


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda folder: folder.name)
def test_a_showcase_holds_what_checking_it_needs_and_says_how(folder):
    for name in ("trials.parquet", "metrics.parquet", "model.pt", "figures"):
        assert (folder / name).exists(), f"{folder.name} lacks {name}"
    assert (folder / "model.pt").stat().st_size < 5_000_000  # a few MB at most
    commands = re.findall(r"^\s+sweeps evaluate (\S+)", (folder / "report.md").read_text(), re.MULTILINE)
    assert commands == [f"results/showcase/{folder.name}/model.pt"]  # relative to the repository's root


@functools.cache
def published_mse(folder: Path) -> float:
    """The published model.pt's test MSE, as `sweeps evaluate` computes it (synthetic data: generated from its seed)."""
    trained = evaluate.load(folder / "model.pt")
    return evaluate.metrics(trained, evaluate.splits_of(trained))["mse"]


@pytest.mark.parametrize("folder", SYNTHETIC, ids=lambda folder: folder.name)
def test_a_synthetic_showcase_evaluates_to_its_reports_test_figure(folder):
    assert f"| mse | {published_mse(folder):.6g} |" in (folder / "report.md").read_text()


def test_the_synthetic_showcase_is_the_studys_whole_grid_at_its_budget_under_its_target():
    """All 24 configurations of the study at 1000 epochs, the best checkpoint under the study's 0.01."""
    trials = pd.read_parquet(SHOWCASE / "synthetic" / "trials.parquet")
    grid = EXPERIMENTS["synthetic"].grid
    configs = {tuple(row) for row in trials[[f"config/{name}" for name in grid]].itertuples(index=False)}
    assert configs == set(itertools.product(*grid.values())) and len(trials) == 24
    assert (trials["config/epochs"] == 1000).all() and (trials["config/n"] == 10_000).all()
    assert published_mse(SHOWCASE / "synthetic") <= 0.01


def test_promotion_finds_the_best_of_the_whole_grid_with_a_fraction_of_its_epochs():
    """The default scheduler against the study's grid trained to its whole budget, both at one commit and seed: its best
    within 10% of the grid's best, with at most a quarter of the grid's epochs (trial-seconds are left out: the whole
    grid shared its machine)."""
    promotion, whole = (
        pd.read_parquet(SHOWCASE / name / "trials.parquet") for name in ("synthetic-promotion", "synthetic-full-grid")
    )
    assert len(whole) == 24 and (whole.epochs == 1000).all() and not whole.stopped_early.any()
    assert promotion.best_val_mse.min() <= 1.10 * whole.best_val_mse.min()
    assert promotion.epochs.sum() <= 0.25 * whole.epochs.sum()
