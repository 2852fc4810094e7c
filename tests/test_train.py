import io
import math

import pytest
import torch

from lstm_ae import precision, train
from lstm_ae.data import Split, Splits, mnist, synthetic
from lstm_ae.model import LSTMAutoencoder
from lstm_ae.train import PLATEAU_PATIENCE, baseline_mse, direction, evaluate, fit, losses, per_step_mean
from tests.precisions import LOW, bf16_or_refused


@pytest.fixture(scope="module")
def signals():
    return synthetic.load(n=600, seed=0)


def model_for(splits, **heads):
    return LSTMAutoencoder.from_config({"input_size": splits.train.x.shape[-1], "hidden_size": 16, **heads}, seed=0)


def test_a_few_epochs_lower_the_validation_loss(signals):
    model = model_for(signals)
    initial = evaluate(model, signals.val)["loss"]
    history = list(fit(model, signals, epochs=8, batch_size=32, lr=1e-2, grad_clip=1.0, device="cpu"))
    assert [m["epoch"] for m in history] == list(range(1, 9))
    assert history[-1]["val_loss"] < 0.7 * initial
    assert history[-1]["val_loss"] == history[-1]["val_mse"]  # no head: the loss is the MSE


def test_metrics_per_head(mnist_root):
    splits = mnist.load(mnist_root, val_size=100, download=False)
    classify = next(iter(fit(model_for(splits, num_classes=10), splits, epochs=1, batch_size=64, lr=1e-2)))
    assert {"train_ce", "train_accuracy", "val_ce", "val_accuracy"} <= set(classify)
    assert classify["val_loss"] == pytest.approx(0.5 * classify["val_mse"] + 0.5 * classify["val_ce"])
    signals = synthetic.load(n=100)
    predict = next(
        iter(fit(model_for(signals, predict_next=True), signals, epochs=1, batch_size=32, lr=1e-2, recon_weight=0.7))
    )
    assert predict["val_loss"] == pytest.approx(0.7 * predict["val_mse"] + 0.3 * predict["val_pred_mse"])
    assert "val_accuracy" not in predict
    # Every metric has its direction: accuracies up, every loss and error down (ASHA, Optuna and the tables use it).
    assert {m: direction(m) for m in classify if m != "epoch"} == {
        m: "max" if m.endswith("accuracy") else "min" for m in classify if m != "epoch"
    }
    assert direction("val_pred_mae_original") == "min"


def test_losses_by_hand():
    model = LSTMAutoencoder(1, 4, predict_next=True)
    x = torch.rand(5, 7, 1)
    out = model(x)
    parts = losses(out, x, None, recon_weight=0.25)
    mse = ((out.reconstruction - x) ** 2).mean()
    pred = ((out.prediction[:, :-1] - x[:, 1:]) ** 2).mean()
    assert parts["mse"].item() == pytest.approx(mse.item())
    assert parts["pred_mse"].item() == pytest.approx(pred.item())
    assert parts["loss"].item() == pytest.approx(0.25 * mse.item() + 0.75 * pred.item())


def test_the_plateau_schedule_halves_the_rate_after_patience_epochs_without_progress(signals, monkeypatch):
    monkeypatch.setattr(train, "evaluate", lambda *args, **kwargs: {"loss": 0.5, "mse": 0.5})  # a loss that stalls
    run = fit(model_for(signals), signals, epochs=PLATEAU_PATIENCE + 2, batch_size=100, lr=1e-2, schedule="plateau")
    lrs = [run.optimizer.param_groups[0]["lr"] for _ in run]
    assert lrs[: PLATEAU_PATIENCE + 1] == [1e-2] * (PLATEAU_PATIENCE + 1) and lrs[-1] == 5e-3


def test_the_plateau_schedule_resumes_with_its_count_of_epochs_without_progress(signals, monkeypatch):
    """Stopped after 8 stalled epochs, it halves at the 11th all the same: the rate of the epochs after differs."""
    monkeypatch.setattr(train, "evaluate", lambda *args, **kwargs: {"loss": 0.5, "mse": 0.5})
    kwargs = dict(epochs=PLATEAU_PATIENCE + 4, batch_size=100, lr=1e-2, schedule="plateau", device="cpu")
    straight = list(fit(model_for(signals), signals, **kwargs))
    first_part = fit(model_for(signals), signals, **kwargs)
    for _ in range(8):
        next(first_part)
    state = first_part.state()
    assert state["schedule"]["num_bad_epochs"] == 7
    resumed = fit(LSTMAutoencoder.from_config(model_for(signals).config, seed=9), signals, start=state, **kwargs)
    assert list(resumed) == straight[8:]


def test_evaluate_is_the_mean_over_the_whole_split(signals):
    model = model_for(signals)
    whole = evaluate(model, signals.val, batch_size=10_000)["mse"]
    batched = evaluate(model, signals.val, batch_size=7)["mse"]
    assert batched == pytest.approx(whole, rel=1e-5)


@pytest.mark.parametrize(
    "recipe, model",
    [
        ({}, {}),
        ({"schedule": "cosine", "precision": "bf16"}, {}),
        ({}, {"encoder_cell": "layernorm", "decoder_input": "position", "steps": 50}),  # (fused on a CPU)
    ],
    ids=["constant-fp32", "cosine-bf16", "layernorm-position"],
)
def test_continuing_from_a_saved_state_is_the_same_as_not_stopping(signals, recipe, model):
    kwargs = dict(batch_size=32, lr=1e-2, grad_clip=1.0, seed=5, device="cpu", **recipe)
    if recipe.get("precision") == "bf16":
        bf16_or_refused(lambda: _continued_equals_straight(signals, kwargs, model))
    else:
        _continued_equals_straight(signals, kwargs, model)


def _continued_equals_straight(signals, kwargs, options):
    straight = list(fit(model_for(signals, **options), signals, epochs=4, **kwargs))

    first_half = fit(model_for(signals, **options), signals, epochs=4, **kwargs)
    next(first_half), next(first_half)  # interrupted after epoch 2 (the schedule spans all 4)
    saved = io.BytesIO()
    torch.save(first_half.state(), saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)  # what a checkpoint reader does
    fresh = LSTMAutoencoder.from_config(model_for(signals, **options).config, seed=123)  # other weights, overwritten
    second_half = list(fit(fresh, signals, epochs=4, start=state, **kwargs))

    assert [m["epoch"] for m in second_half] == [3, 4]
    assert second_half == straight[2:]


def test_batch_order_depends_on_the_seed(signals):
    runs = [list(fit(model_for(signals), signals, epochs=1, batch_size=32, lr=1e-2, seed=s)) for s in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_gradient_clipping_bounds_the_step():
    # With clipping at a tiny norm, one SGD-like Adam step moves weights far less than without.
    splits = Splits(Split(torch.rand(64, 10, 1) * 5), Split(torch.rand(8, 10, 1)), Split(torch.rand(8, 10, 1)))
    moved = {}
    for clip in (0.0, 1e-6):
        model = LSTMAutoencoder.from_config({"input_size": 1, "hidden_size": 4}, seed=0)
        before = [p.detach().clone() for p in model.parameters()]
        list(fit(model, splits, epochs=1, batch_size=64, lr=1e-3, grad_clip=clip))
        moved[clip] = sum((p - b).abs().sum().item() for p, b in zip(model.parameters(), before))
    # Adam normalises the step, so clipping shows only through the moment estimates' epsilon: still smaller.
    assert moved[1e-6] < moved[0.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0}, "lr must be positive"),
        ({"lr": math.nan}, "lr must be positive"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": -1}, "epochs"),
        ({"grad_clip": -1}, "grad_clip"),
        ({"recon_weight": 1.5}, "recon_weight"),
    ],
)
def test_impossible_hyperparameters_are_refused(signals, kwargs, message):
    args = {"epochs": 1, "batch_size": 32, "lr": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit(model_for(signals), signals, **args)


def test_stock_errors_in_dollars_are_computed_through_the_normaliser(stocks_csv):
    from lstm_ae.data import snp500

    splits = snp500.load(stocks_csv, seq_len=50, normalize="first")
    model = LSTMAutoencoder.from_config({"input_size": 1, "hidden_size": 8, "predict_next": True}, seed=0)
    normalizer = splits.meta["normalizer"]["val"]
    metrics = evaluate(model, splits.val, normalizer=normalizer, batch_size=7)
    out = model(splits.val.x)
    dollars = normalizer.invert(splits.val.x)
    expected = (normalizer.invert(out.reconstruction) - dollars).abs().mean().item()
    expected_pred = (normalizer.invert(out.prediction)[:, :-1] - dollars[:, 1:]).abs().mean().item()
    assert metrics["mae_original"] == pytest.approx(expected, rel=1e-4)
    assert metrics["pred_mae_original"] == pytest.approx(expected_pred, rel=1e-4)
    first_epoch = next(iter(fit(model, splits, epochs=1, batch_size=32, lr=1e-3)))
    assert "val_pred_mae_original" in first_epoch and "train_pred_mae_original" not in first_epoch


def test_the_cosine_schedule_anneals_to_zero_over_the_whole_budget(signals):
    run = fit(model_for(signals), signals, epochs=3, batch_size=100, lr=1e-2, schedule="cosine")
    lrs = []
    for _ in run:
        lrs.append(run.optimizer.param_groups[0]["lr"])
    assert lrs[0] < 1e-2 and lrs[0] > lrs[1] > lrs[2]
    assert lrs[2] == pytest.approx(0, abs=1e-12)
    constant = fit(model_for(signals), signals, epochs=2, batch_size=100, lr=1e-2)
    list(constant)
    assert constant.optimizer.param_groups[0]["lr"] == 1e-2


def test_a_state_records_the_hyperparameters_and_the_schedule(signals):
    run = fit(
        model_for(signals),
        signals,
        epochs=2,
        batch_size=32,
        lr=3e-3,
        recon_weight=0.7,
        schedule="cosine",
        precision=LOW,
    )
    next(run)
    state = run.state()
    assert state["hyperparameters"] == {
        "epochs": 2,
        "batch_size": 32,
        "lr": 3e-3,
        "grad_clip": 0.0,
        "recon_weight": 0.7,
        "seed": 0,
        "schedule": "cosine",
        "precision": LOW,
    }
    assert state["schedule"]["last_epoch"] == math.ceil(len(signals.train) / 32)


def test_bf16_trains_like_fp32_where_the_cpu_has_it(signals):
    """Autocast changes the arithmetic, not the model: the same seed learns about as much in both."""

    def final(precision):
        history = fit(model_for(signals), signals, epochs=6, batch_size=32, lr=1e-2, grad_clip=1.0, precision=precision)
        return list(history)[-1]["val_mse"]

    if (bf16 := bf16_or_refused(lambda: final("bf16"))) is not None:
        assert bf16 == pytest.approx(final("fp32"), rel=0.15)


def test_a_cpu_without_bf16_is_refused_before_the_first_epoch(signals, monkeypatch):
    """Simulated on any CPU: lstm_ae.precision answers that this one has none."""
    monkeypatch.setattr(precision, "cpu_runs_bf16", lambda: False)
    with pytest.raises(precision.PrecisionUnavailable, match=r"needs a CPU with native bf16 .*use fp32"):
        fit(model_for(signals), signals, epochs=1, batch_size=32, lr=1e-3, precision="bf16", device="cpu")
    with pytest.raises(precision.PrecisionUnavailable, match="native bf16"):
        evaluate(model_for(signals), signals.val, precision="bf16")


def test_fp16_needs_a_gpu(signals):
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        fit(model_for(signals), signals, epochs=1, batch_size=32, lr=1e-3, precision="fp16", device="cpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"schedule": "step"}, "schedule must be one of constant, cosine, plateau"),
        ({"precision": "int8"}, "precision must be one of fp32, bf16, fp16"),
        ({"batch_size": 2.5}, "batch_size must be a whole number"),
        ({"lr": math.inf}, "lr must be positive and finite"),
    ],
)
def test_impossible_recipe_options_are_refused(signals, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(model_for(signals), signals, **{"epochs": 1, "batch_size": 32, "lr": 1e-3, **kwargs})


def test_a_wrongly_typed_hyperparameter_is_named():
    from lstm_ae.train import Hyperparameters

    with pytest.raises(TypeError, match="lr must be a number, got 'fast'"):
        Hyperparameters(epochs=1, batch_size=32, lr="fast")


def test_the_baseline_is_the_training_splits_per_step_mean():
    train = Split(torch.tensor([[[0.0], [2.0]], [[2.0], [4.0]]]))  # per-step mean: 1, 3
    other = Split(torch.tensor([[[1.0], [3.0]], [[3.0], [3.0]]]))
    assert torch.equal(per_step_mean(train), torch.tensor([[1.0], [3.0]]))
    assert baseline_mse(train, other) == pytest.approx((0 + 0 + 4 + 0) / 4)
    assert baseline_mse(train, train) == pytest.approx(1.0)  # its own variance per step
