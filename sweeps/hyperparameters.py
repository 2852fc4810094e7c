"""The hyperparameters a sweep may set, in one place: they are lstm_ae's own options (ModelConfig for the model,
Hyperparameters for training), whose defaults and checks live there; this module only says which of their fields
a sweep may set, and splits a trial's config between the two.
"""

from __future__ import annotations

import dataclasses

from lstm_ae.cells import CELLS, GATE_BIASES, RECURRENT_INITS
from lstm_ae.model import DECODER_INPUTS, ModelConfig
from lstm_ae.precision import PRECISIONS
from lstm_ae.train import SCHEDULES, Hyperparameters

MODEL = (  # fields of ModelConfig
    "hidden_size",
    "encoder_cell",
    "decoder_cell",
    "decoder_input",
    "gate_bias",
    "recurrent_init",
)
TRAINING = ("batch_size", "lr", "grad_clip", "recon_weight", "schedule", "precision")  # fields of Hyperparameters
NAMES = MODEL + TRAINING
CHOICES = {
    "encoder_cell": CELLS,
    "decoder_cell": CELLS,
    "decoder_input": DECODER_INPUTS,
    "gate_bias": GATE_BIASES,
    "recurrent_init": RECURRENT_INITS,
    "schedule": SCHEDULES,
    "precision": PRECISIONS,
}
# Placeholders for what a check needs but a sweep does not set: the real ones come with the data.
_SHAPE = {"input_size": 1, "steps": 3}  # 3: the shortest sequence chrono accepts; every experiment's is longer
_REQUIRED = {"hidden_size": 1, "batch_size": 1, "lr": 1.0}  # fields without a default in lstm_ae


def model_config(config: dict, input_size: int, steps: int, heads: dict) -> dict:
    """The trial's ModelConfig, as the dict a checkpoint stores."""
    return {"input_size": input_size, "steps": steps, **heads, **{k: config[k] for k in MODEL if k in config}}


def training(config: dict) -> dict:
    """The trial's training hyperparameters, as keyword arguments of lstm_ae.train.fit (absent ones take its defaults)."""
    return {k: config[k] for k in TRAINING if k in config}


def check(point: dict, epochs: int) -> None:
    """lstm_ae's own checks of one combination of values; raises ValueError or TypeError naming the hyperparameter."""
    values = {**_REQUIRED, **point}
    ModelConfig(**_SHAPE, **{k: values[k] for k in MODEL if k in values})
    Hyperparameters(epochs=epochs, **training(values))


_DEFAULTS = {f.name: f.default for cls in (ModelConfig, Hyperparameters) for f in dataclasses.fields(cls)}


def default(name: str):
    """lstm_ae's default of a hyperparameter (dataclasses.MISSING for those without one)."""
    return _DEFAULTS.get(name, dataclasses.MISSING)


def describe() -> str:
    """Each name with its choices and lstm_ae's default, for `sweeps list`."""
    words = []
    for name in NAMES:
        value = default(name)
        choices = f" {{{', '.join(CHOICES[name])}}}" if name in CHOICES else ""
        words.append(name + choices + ("" if value is dataclasses.MISSING else f" (default {value})"))
    return ", ".join(words)
