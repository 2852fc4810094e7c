"""The trial: the only code that runs inside Ray Tune's workers.

Read the config, build the data and the model, continue from the last checkpoint when Ray restarts the
trial, then loop over `lstm_ae.train.fit`, reporting every epoch (with the best value of the experiment's metric
so far, which ASHA and Optuna rank trials on) and checkpointing every few. Every checkpoint also carries the
weights of the trial's best epoch so far, kept in memory between checkpoints: the best epoch seldom falls on a
checkpoint (the synthetic grid's best trial peaked at epoch 111, between checkpoints at 110 and 120, and spiked
after), and the model a sweep found is the one of its best epoch.
"""

from __future__ import annotations

import logging
import math
import socket
import tempfile
import warnings
from dataclasses import replace

import ray
import torch
from ray import tune

from lstm_ae.data import Split, Splits
from lstm_ae.model import LSTMAutoencoder
from lstm_ae.precision import PrecisionUnavailable
from lstm_ae.train import Fit, fit
from sweeps import checkpoints, hyperparameters, signals
from sweeps.experiments import EXPERIMENTS
from sweeps.sweep import FALLBACKS

TRIAL_NAME = "trial"  # Ray's name for the trainable: trials are trial_<id>, in folders trial_<id>_<values>


def ship(datasets: dict) -> dict:
    """The data as numpy arrays, for the object store: Ray hands every trial on a node a read-only view of the
    node's one copy (zero-copy), where each trial would get its own copy of torch tensors."""
    return {key: _arrays(splits, torch.Tensor.numpy) for key, splits in datasets.items()}


def unship(shipped: dict, config: dict) -> Splits:
    """The trial's data, as tensors over the shipped arrays (no copy: the training loop only reads them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return _arrays(shipped[data_key(config)], torch.from_numpy)


def _arrays(splits: Splits, convert) -> Splits:
    def part(split: Split) -> Split:
        return Split(convert(split.x), None if split.y is None else convert(split.y))

    return replace(splits, train=part(splits.train), val=part(splits.val), test=part(splits.test))


def data_key(config: dict) -> tuple:
    """Which of the shipped data sets a trial uses: one per value of the experiment's data hyperparameters."""
    return tuple(config[name] for name in EXPERIMENTS[config["experiment"]].data_params)


def data_record(source: dict, config: dict) -> dict:
    """What rebuilds a trial's splits: how the driver built the sweep's data and the trial's data hyperparameters."""
    params = {name: config[name] for name in EXPERIMENTS[config["experiment"]].data_params}
    return {**source, "params": params}


def start_fit(config: dict, splits: Splits, start: dict | None = None, device=None) -> tuple[Fit, dict]:
    """The trial's model and training run from its config: (the epochs to iterate, the model's config)."""
    _, steps, features = splits.train.x.shape
    model_config = hyperparameters.model_config(config, features, steps, EXPERIMENTS[config["experiment"]].heads)
    model = LSTMAutoencoder.from_config(model_config, seed=config["seed"])
    training = fit(
        model,
        splits,
        epochs=config["epochs"],
        seed=config["seed"],
        start=start,
        device=device,
        **hyperparameters.training(config),
    )
    return training, model_config


def run_trial(
    config: dict, datasets: dict, source: dict, on_corrupt_checkpoint: str = FALLBACKS[0], pause_at: tuple = ()
) -> None:
    """One trial, from its last checkpoint to its budget. `datasets`: what `ship` made of the driver's data;
    `source`: how the driver built it (experiment, preset, seed, path), which every checkpoint records with the trial's
    own data hyperparameters; `pause_at`: the epochs at which the scheduler may pause the trial, which it resumes from
    the checkpoint of that epoch."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not a line per checkpoint in the driver's output
    signals.ray_worker_ends_on_sigterm()
    # Ray sets OMP_NUM_THREADS=1 in workers; give torch the CPUs this trial was given instead.
    torch.set_num_threads(max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1))))
    start, history = checkpoints.restore(
        tune.get_checkpoint(), on_corrupt_checkpoint, tune.get_context().get_trial_name()
    )
    try:
        training, model_config = start_fit(config, unship(datasets, config), start)
    except PrecisionUnavailable as error:  # a node of a cluster that lacks what the driver's machine has
        raise PrecisionUnavailable(
            f"on node {socket.gethostname()} ({ray.util.get_node_ip_address()}): {error}"
        ) from None
    node_id = ray.get_runtime_context().get_node_id()
    experiment = EXPERIMENTS[config["experiment"]]
    best = ([math.nan] + experiment.running_bests(history))[-1]  # epochs before a restart
    kept = checkpoints.best_weights(start, history, experiment.metric)
    for metrics in training:
        history.append(metrics)
        diverged = not math.isfinite(metrics["train_loss"])
        best = experiment.better(best, metrics[experiment.metric])
        kept = keep_if_better(kept, metrics, training.model, experiment)
        report = {**metrics, experiment.running_best: best, "node_id": node_id, "diverged": diverged}
        epoch = metrics["epoch"]
        if diverged or epoch == config["epochs"] or epoch % config["checkpoint_every"] == 0 or epoch in pause_at:
            # Written whole in a temporary folder, then handed to Ray: a crash never leaves half a checkpoint.
            with tempfile.TemporaryDirectory() as folder:
                state = {**training.state(), checkpoints.BEST: kept}
                checkpoints.save(folder, state, model_config, history, data_record(source, config))
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(report)
        if diverged:  # a NaN loss never recovers: end the trial, with the reason in its metrics
            return


def keep_if_better(kept: dict | None, metrics: dict, model: torch.nn.Module, experiment) -> dict | None:
    """The best epoch's weights so far: `kept` or, where this epoch's metric beats it (ties keep the earlier
    epoch; a NaN never wins), a copy of the model's weights now."""
    value = metrics[experiment.metric]
    if kept is not None and experiment.better(kept["value"], value) == kept["value"]:
        return kept
    if not math.isfinite(value):
        return kept
    weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return {"model": weights, "epoch": metrics["epoch"], "value": value}
