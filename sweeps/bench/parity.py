"""Precision parity: does training in bf16 reach the accuracy fp32 reaches?

For the MNIST-rows and pixel-by-pixel shapes (the classifying experiments' models: rows at hidden 64; pixels with
the recipe's cell and initialisation at hidden 64, at the showcase's batch of 64 and a constant learning rate), each
seed trains one model in fp32 and one in bf16 from the same
initial weights over the same batches (`fit`, one pass over the first images of the real training split), then
both are scored on the same validation images. The difference bf16 - fp32 is set against the noise: how far fp32
runs of different seeds land from each other. Real MNIST where it is next to the project (../shared/data), else
random images (the rows then say so: their accuracies mean nothing).
"""

from __future__ import annotations

from statistics import mean, stdev

from lstm_ae.data import head, mnist
from lstm_ae.model import LSTMAutoencoder, ModelConfig
from lstm_ae.precision import unavailable
from lstm_ae.train import fit
from sweeps.bench.harness import Bench, Row
from sweeps.bench.memory import mnist_root
from sweeps.experiments import PIXEL_RECIPE

# view -> the model's options and the trainer's, as the experiments set them (the recipe on the pixels).
SHAPES = {
    "rows": ({"hidden_size": 64}, {"batch_size": 64, "lr": 1e-3, "grad_clip": 1.0}),
    "pixels": (
        {"hidden_size": 64, **{k: PIXEL_RECIPE[k] for k in ("encoder_cell", "gate_bias", "recurrent_init")}},
        {"batch_size": 64, "lr": 2e-3, "grad_clip": 1.0},
    ),
}


def measure(bench: Bench) -> list[Row]:
    from sweeps.bench.pixel import precisions

    low = [p for p in precisions(bench.device) if p != "fp32"]
    if not low:
        return [bench.not_run(unavailable("bf16", bench.device))]
    root, real = mnist_root(bench.out)
    return [_shape(bench, view, root, real, low[0]) for view in SHAPES]


def _shape(bench: Bench, view: str, root, real: bool, low: str) -> Row:
    images, seeds, val = bench.budget.parity_images[view], bench.budget.parity_seeds, bench.budget.parity_val
    splits = head(mnist.load(root, view=view, val_size=val, download=False), train=images)
    model_options, training = SHAPES[view]
    _, steps, features = splits.train.x.shape
    accuracy = {p: [] for p in ("fp32", low)}
    for seed in range(seeds):
        for precision in accuracy:
            config = ModelConfig(features, num_classes=10, steps=steps, **model_options)
            model = LSTMAutoencoder.from_config(config, seed=seed)  # the same initial weights for both precisions
            training_run = fit(model, splits, epochs=1, seed=seed, precision=precision, device=bench.device, **training)
            accuracy[precision].append(next(iter(training_run))["val_accuracy"])
    differences = [b - f for b, f in zip(accuracy[low], accuracy["fp32"])]
    # fp32's spread over seeds, at least one validation image's worth (two seeds can agree to the image).
    noise = max(stdev(accuracy["fp32"]), 1 / val)
    shown = ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(accuracy["fp32"], accuracy[low]))
    detail = (
        f"val accuracy fp32/{low} per seed: {shown}; mean difference {mean(differences) * 100:+.2f} points, fp32's "
        f"spread over seeds (std) {noise * 100:.2f} points; 1 pass over {images:,} "
        f"{'real' if real else 'RANDOM (meaningless)'} images, batch {training['batch_size']}, {val:,} validation"
    )
    # |mean difference| over the seed-to-seed spread: at most 1, bf16 is within fp32's own noise.
    return bench.row(
        f"{view}: |{low} - fp32| accuracy over fp32's seed noise", abs(mean(differences)) / noise, "noise", detail
    )
