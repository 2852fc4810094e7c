"""The report's figures and tables, on small hand-built DataFrames and tiny checkpoints."""

import numpy as np
import pandas as pd
import pytest
import torch

from lstm_ae.model import LSTMAutoencoder
from sweeps import checkpoints, figures
from sweeps.collect import ranked
from sweeps.report import _edge_warnings, _header, _trials_table, best_checkpoint
from sweeps.report_figures import Context, trial_label
from sweeps.sweep import Sweep


def hand_built_trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "config/hidden_size": [10, 25, 40, 40],
            "config/lr": [1e-3, 1e-2, 1e-2, 1e-3],
            "status": ["TERMINATED", "TERMINATED", "TERMINATED", "ERROR"],
            "stopped_early": [True, False, False, False],
            "diverged": [False, False, True, False],
            "epochs": [3, 12, 5, 2],
            "best_val_mse": [0.05, 0.02, np.nan, 0.001],
            "last_val_mse": [0.06, 0.025, np.nan, 0.001],
            "wall_time_s": [1.0, 4.0, 2.0, 0.5],
        }
    )


def hand_built_metrics() -> pd.DataFrame:
    rows = [("a", e, 0.1 / e) for e in range(1, 4)] + [("b", e, 0.2 / e) for e in range(1, 13)] + [("c", 1, 0.3)]
    return pd.DataFrame(rows, columns=["trial_id", "epoch", "val_mse"]).assign(train_mse=lambda d: d.val_mse * 1.1)


def test_ranked_leaves_out_diverged_and_errored_trials():
    order = ranked(hand_built_trials(), "val_mse", "min")
    assert order.trial_id.tolist() == ["b", "a"]  # d has the lowest value, but errored; c diverged
    assert ranked(
        hand_built_trials().assign(best_val_mse=[0.5, 0.9, 0.1, 0.2]), "val_mse", "max"
    ).trial_id.tolist() == ["b", "a"]


def test_trials_table_rows_and_numbers():
    table = _trials_table(
        hand_built_trials(), Sweep("synthetic", overrides={"batch_size": [32], "grad_clip": [0.0]}), top=3
    )
    lines = table.splitlines()
    assert lines[0] == "## All trials (top 3 of 4, best first)"
    assert (
        lines[2]
        == "| trial | lr | hidden_size | best val_mse | last val_mse | epochs | stopped early | status | wall time (s) |"
    )
    assert lines[4] == "| d | 0.001 | 40 | 0.001 | 0.001 | 2 | no | error | 0.5 |"
    assert lines[5] == "| b | 0.01 | 25 | 0.02 | 0.025 | 12 | no | terminated | 4.0 |"
    assert lines[6] == "| a | 0.001 | 10 | 0.05 | 0.06 | 3 | yes | terminated | 1.0 |"
    assert len(lines) == 7


def test_the_header_says_what_share_of_the_budget_was_trained():
    trials = hand_built_trials().assign(**{"config/epochs": 12})
    header = _header(Sweep("synthetic", preset="paper"), trials)
    assert "4 of 24 trials (1 ran the whole budget, 1 stopped early" in header  # the grid has 24
    assert "22 of 48 epochs trained (46%) in 0.1 trial-minutes" in header
    assert (
        "Early stopping: ASHA by promotion (a trial waits at each rung until it ranks among those it passes on) "
        "(`--scheduler promotion`), rungs at epochs 50, 150, 450, each passing 1/3 of its trials on. It stopped 1 "
        "trial: 9 epochs and about 0.1 trial-minutes saved" in header
    )  # a's 9 epochs left at its 1/3 s each: 3 s
    without = _header(Sweep("synthetic", scheduler="asha", early_stop=False), trials)
    assert "No early stopping (`--no-early-stop`)" in without and "Early stopping:" not in without
    assert "(`--scheduler asha`), rungs at epochs 1, 4, each passing 1/4 of its trials on." in (
        _header(Sweep("synthetic", scheduler="asha", epochs=12), trials)
    )
    assert "Running now" not in header
    running = _header(Sweep("synthetic"), trials, {"host": "node-7", "pid": 4242, "heartbeat": 0.0})
    assert "> Running now, driven by process 4242 on node-7: this report covers what has run so far." in running


def test_edge_warnings_for_ranges_of_three_or_more():
    trials = hand_built_trials()
    sweep = Sweep("synthetic")  # hidden {10, 25, 40}; lr, batch, clip have two values: no inside to leave
    assert _edge_warnings(sweep, trials, trials.iloc[2]) == [
        "> Warning: the best hidden_size (40) is the largest value searched: the optimum may lie beyond it."
    ]
    assert _edge_warnings(sweep, trials, trials.iloc[1]) == []


def test_optuna_edge_warnings_measure_the_range_searched_not_the_values_sampled():
    sweep = Sweep("synthetic", search="optuna")  # lr log 1e-4..1e-2, hidden 10..49, batch {32, 64, 128}
    trials = pd.DataFrame(
        {"config/lr": [3.6e-3, 1e-3], "config/hidden_size": [49, 20], "config/batch_size": [128, 64]}
    ).assign(**{"config/grad_clip": 2.0, "trial_id": ["a", "b"]})  # (a row of mixed types keeps its ints)
    assert _edge_warnings(sweep, trials, trials.iloc[0]) == [
        "> Warning: the best batch_size (128) is the largest value searched: the optimum may lie beyond it.",
        "> Warning: the best hidden_size (49) is in the highest tenth of the range searched (10..49): the optimum "
        "may lie beyond it.",
    ]  # lr 3.6e-3, the largest sampled, lies at 78% of the log range: inside
    low = trials.assign(**{"config/lr": 1.2e-4, "config/hidden_size": 30, "config/batch_size": 64}).iloc[0]
    assert _edge_warnings(sweep, trials, low) == [
        "> Warning: the best lr (0.00012) is in the lowest tenth of the range searched (log 0.0001..0.01): the "
        "optimum may lie beyond it."
    ]
    no_clip = trials.assign(**{"config/grad_clip": 0.1, "config/hidden_size": 30, "config/batch_size": 64}).iloc[1]
    assert _edge_warnings(sweep, trials, no_clip) == []  # clip 0..5: nothing lies below 0


def test_best_checkpoint_is_chosen_on_the_metric(tmp_path, capsys):
    model_state = {
        "model": LSTMAutoencoder(1, 4).state_dict(),
        "optimizer": {},
        "epoch": 0,
        "rng": torch.Generator().get_state(),
    }
    values = {3: 0.05, 6: 0.02, 9: 0.04}  # val_mse at each checkpoint's epoch
    for epoch in values:
        folder = tmp_path / f"checkpoint_{epoch:06d}"
        folder.mkdir()
        history = [{"epoch": e, "val_mse": v} for e, v in values.items() if e <= epoch]
        checkpoints.save(folder, {**model_state, "epoch": epoch}, {"input_size": 1, "hidden_size": 4}, history, {})
    assert best_checkpoint(str(tmp_path), "val_mse", "min").path.endswith("checkpoint_000006")
    assert best_checkpoint(str(tmp_path), "val_mse", "max").path.endswith("checkpoint_000003")
    # A damaged best checkpoint is skipped, with a line naming it; the next best is taken.
    (tmp_path / "checkpoint_000006" / "model.pt").write_bytes(b"truncated")
    assert best_checkpoint(str(tmp_path), "val_mse", "min").path.endswith("checkpoint_000009")
    skipped = capsys.readouterr().err
    assert "skipped the unreadable checkpoint" in skipped and "checkpoint_000006" in skipped


@pytest.mark.parametrize(
    "name, draw",
    [
        (
            "curves",
            lambda: figures.validation_curves(hand_built_metrics(), hand_built_trials(), "val_mse", "b", "lr=0.01"),
        ),
        ("effect", lambda: figures.hyperparameter_effect(hand_built_trials(), "lr", "val_mse", "b")),
        (
            "effect_categorical",
            lambda: figures.hyperparameter_effect(
                hand_built_trials().assign(**{"config/lr": ["x", "y", "x", "y"]}), "lr", "val_mse", "b"
            ),
        ),
        ("importances", lambda: figures.importances({"lr": 0.7, "hidden_size": 0.3})),
        ("signals", lambda: figures.signal_examples({"train": np.random.rand(3, 50), "val": np.random.rand(3, 50)})),
        ("learning", lambda: figures.learning_curves(hand_built_metrics().query("trial_id == 'b'"), ["mse"], "curves")),
        (
            "reconstructions",
            lambda: figures.reconstructions(
                np.random.rand(3, 20), np.random.rand(3, 20), np.random.rand(3, 20), ["a", "b", "c"], "value", "t"
            ),
        ),
        (
            "digits",
            lambda: figures.digits(
                np.random.rand(4, 28, 28), np.random.rand(4, 28, 28), np.random.rand(28, 28), ["1", "2", "3", "4"]
            ),
        ),
        ("confusion", lambda: figures.confusion(np.eye(10, dtype=int) * 5, 1.0)),
        (
            "prices",
            lambda: figures.prices(
                pd.DataFrame(
                    {"AMZN": [1.0, 2.0], "GOOGL": [2.0, 1.0]}, index=pd.to_datetime(["2014-01-02", "2014-01-03"])
                )
            ),
        ),
        (
            "forecasts",
            lambda: figures.forecasts(
                np.random.rand(2, 10),
                {"model": np.random.rand(2, 5), "persistence": np.ones((2, 5))},
                ["a", "b"],
                5,
                "t",
            ),
        ),
    ],
)
def test_every_figure_draws_labelled_data(tmp_path, name, draw):
    figure = draw()
    with_data = [ax for ax in figure.axes if ax.lines or ax.images or ax.patches or ax.collections]
    assert with_data, f"{name}: nothing drawn"
    titled = bool(figure.get_suptitle())
    for ax in with_data:  # each panel says what it shows: its own title or labels, or the figure's title
        assert ax.get_title() or ax.get_xlabel() or ax.get_ylabel() or titled, f"{name}: an unlabelled panel"
    assert any(ax.get_xlabel() for ax in with_data) or name in ("digits",), f"{name}: no axis label"
    path = figures.save(figure, tmp_path / f"{name}.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_curves_name_the_best_trial_by_its_values_and_mark_early_stopping_only_when_it_ran_as_their_caption_says():
    trials = hand_built_trials()
    metrics = hand_built_metrics().assign(resumed=lambda d: (d.trial_id == "b") & (d.epoch == 5))  # b waited at 4
    figure = figures.validation_curves(metrics, trials, "val_mse", "b", "lr=0.01")
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "best trial: lr=0.01" in legend and ("stopped early" in legend) == bool(trials.stopped_early.any())
    (waited,) = [line for line in figure.axes[0].lines if line.get_label() == "waited here, then went on"]
    assert list(waited.get_xdata()) == [4] and list(waited.get_ydata()) == [0.2 / 4]
    caption = figures.curve_marks(metrics, trials, "val_mse")  # the caption explains the marks drawn, no others
    assert ("x where" in caption) == bool(trials.stopped_early.any()) and "o where a trial paused" in caption
    assert figures.curve_marks(metrics, trials.assign(stopped_early=False), "val_mse").startswith(", o where")
    none_stopped = trials.assign(stopped_early=False)
    legend = [
        t.get_text()
        for t in figures.validation_curves(hand_built_metrics(), none_stopped, "val_mse", "b", "x")
        .axes[0]
        .get_legend()
        .get_texts()
    ]
    assert "stopped early" not in legend and "waited here, then went on" not in legend  # (no `resumed`: old tables)
    assert figures.curve_marks(hand_built_metrics(), none_stopped, "val_mse") == ""


def test_accuracy_panels_draw_chance():
    history = pd.DataFrame({"epoch": [1, 2], "train_accuracy": [0.5, 0.9], "val_accuracy": [0.4, 0.8]})
    ax = figures.learning_curves(history, ["accuracy"], "t", chance=0.1).axes[0]
    chance = [line for line in ax.lines if line.get_label() == "chance (10%)"]
    assert len(chance) == 1 and set(chance[0].get_ydata()) == {0.1}
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "accuracy (fraction correct)"


@pytest.mark.parametrize("kind, header", [("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_figures_in_vector_formats(tmp_path, kind, header):
    path = figures.save(figures.importances({"lr": 1.0}), tmp_path / f"f.{kind}")
    assert path.read_bytes()[: len(header)] == header


def test_the_best_epochs_weights_kept_in_a_later_checkpoint_are_the_ones_evaluated(tmp_path):
    """A checkpoint keeps the weights of the best epoch so far: the report and `sweeps evaluate` take those, and
    score them on that epoch's metric, not on the checkpoint's own."""
    values = {3: 0.05, 5: 0.01, 6: 0.02, 9: 0.04}  # the best epoch, 5, falls between checkpoints
    models = {epoch: LSTMAutoencoder(1, 4) for epoch in values}
    for epoch in (3, 6, 9):
        best = min((e for e in values if e <= epoch), key=values.get)
        state = {
            "model": models[epoch].state_dict(),
            "optimizer": {},
            "epoch": epoch,
            "rng": torch.Generator().get_state(),
            checkpoints.BEST: {"model": models[best].state_dict(), "epoch": best, "value": values[best]},
        }
        folder = tmp_path / f"checkpoint_{epoch:06d}"
        folder.mkdir()
        history = [{"epoch": e, "val_mse": v} for e, v in values.items() if e <= epoch]
        checkpoints.save(folder, state, {"input_size": 1, "hidden_size": 4}, history, {})
    chosen = best_checkpoint(str(tmp_path), "val_mse", "min")
    assert chosen.path.endswith(("checkpoint_000006", "checkpoint_000009")) and chosen.epoch == 5
    assert chosen.checkpoint_epoch == int(chosen.path[-2:])
    for name, tensor in chosen.model.state_dict().items():
        assert torch.equal(tensor, models[5].state_dict()[name])

    # A checkpoint whose model.pt links to a file outside the sweep is skipped, named, never read: the report takes
    # the best of the others.
    for epoch in (6, 9):
        linked = tmp_path / f"checkpoint_{epoch:06d}" / checkpoints.MODEL_FILE
        outside = tmp_path.parent / f"outside-{epoch}.pt"
        linked.rename(outside)
        linked.symlink_to(outside)
    chosen = best_checkpoint(str(tmp_path), "val_mse", "min")
    assert chosen.path.endswith("checkpoint_000003") and chosen.epoch == 3


def test_the_best_trial_is_named_with_floats_to_three_figures():
    best = pd.Series({"trial_id": "t", "config/lr": 0.003600091192911611, "config/hidden_size": 49})
    ctx = Context(Sweep("synthetic", overrides={"hidden_size": [10, 49], "lr": [1e-4, 1e-2]}), best, *[None] * 5)
    assert trial_label(ctx) == "lr=0.0036, hidden_size=49"  # in the grid's order
