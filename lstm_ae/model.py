"""The LSTM autoencoder: encode a sequence into z, decode z at each of the T steps, reconstruct every step.

model = LSTMAutoencoder(input_size=1, hidden_size=40)              # reconstruction only
model = LSTMAutoencoder(28, 64, num_classes=10)                    # + a classifier on z
model = LSTMAutoencoder(1, 60, predict_next=True)                  # + a causal next-step predictor
model = LSTMAutoencoder(1, 64, num_classes=10, encoder_cell="layernorm", gate_bias="chrono", steps=784)
model = LSTMAutoencoder(1, 128, num_classes=10, decoder_input="position", steps=784)  # + where each step is
out = model(x)          # out.reconstruction (N, T, F), out.logits (N, C), out.prediction (N, T, F)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lstm_ae import cells, fused

DECODER_INPUTS = ("repeat", "position")


def position_code(steps: int) -> torch.Tensor:
    """(steps, 2w) one-hots of t // w and t % w, w = ceil(sqrt(steps)): for MNIST's 784 pixels the row and the
    column. The same for every sequence, so it tells the decoder where it is and nothing about the input: every
    bit of the sequence still has to pass through z. A decoder fed z alone at every step tends to give one
    output at every step (the per-step mean at best); one that knows its step can draw a different one at each."""
    width = math.isqrt(steps - 1) + 1
    t = torch.arange(steps)
    return torch.cat([F.one_hot(t // width, width), F.one_hot(t % width, width)], dim=1).float()


def _shape(shape: tuple | None) -> str:
    return "absent" if shape is None else "x".join(map(str, shape)) or "a scalar"


@dataclass(frozen=True)
class ModelConfig:
    input_size: int  # features per step: 1 for signals and prices, 28 for MNIST rows
    hidden_size: int  # size of z and of both LSTMs' states
    output_size: int | None = None  # features reconstructed per step; None means input_size
    num_layers: int = 1  # stacked LSTM layers in the encoder and in the decoder
    num_classes: int = 0  # > 0 adds a linear classifier on z
    predict_next: bool = False  # adds a linear predictor of x[t+1] on the encoder's output at t
    # The recipe (lstm_ae.cells): each LSTM's cell, what the decoder reads, and how both LSTMs start.
    encoder_cell: str = "lstm"  # "lstm" (nn.LSTM, fused kernels) or "layernorm" (LayerNormLSTM)
    decoder_cell: str = "lstm"
    decoder_input: str = "repeat"  # "repeat": z at every step (the study's); "position": z and where the step is
    gate_bias: str = "default"  # "default" (PyTorch's), "forget1" or "chrono"
    recurrent_init: str = "default"  # "default" (PyTorch's) or "orthogonal"
    steps: int | None = None  # the sequence length: chrono's longest timescale

    def __post_init__(self):
        for name in ("input_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be 0 (no classifier) or more, got {self.num_classes}")
        cells.check(self.encoder_cell, self.gate_bias, self.recurrent_init, self.steps, self.decoder_cell)
        if self.decoder_input not in DECODER_INPUTS:
            raise ValueError(f"decoder_input must be one of {', '.join(DECODER_INPUTS)}, got {self.decoder_input!r}")
        if self.decoder_input == "position" and (self.steps is None or self.steps < 1):
            raise ValueError(f"decoder_input 'position' needs the sequence length: steps >= 1, got {self.steps}")


class Output(NamedTuple):
    reconstruction: torch.Tensor  # (N, T, output_size)
    logits: torch.Tensor | None  # (N, num_classes)
    prediction: torch.Tensor | None  # (N, T, output_size); prediction[:, t] estimates x[:, t + 1]


class LSTMAutoencoder(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, **options):
        """`options`: the other fields of ModelConfig, by name."""
        super().__init__()
        self.config = config = ModelConfig(input_size, hidden_size, **options)
        output_size = config.output_size or input_size
        self.encoder = cells.make_lstm(config.encoder_cell, input_size, hidden_size, config.num_layers)
        if config.decoder_input == "position":
            # A buffer, not a parameter: it is fixed, and checkpoints of the study's decoder stay loadable as they are.
            self.register_buffer("position", position_code(config.steps), persistent=False)
            decoder_input_size = hidden_size + self.position.shape[1]
        else:
            self.position = None
            decoder_input_size = hidden_size
        self.decoder = cells.make_lstm(config.decoder_cell, decoder_input_size, hidden_size, config.num_layers)
        for lstm in (self.encoder, self.decoder):
            cells.initialise(lstm, config.gate_bias, config.recurrent_init, config.steps)
        self.reconstruct = nn.Linear(hidden_size, output_size)
        self.classifier = nn.Linear(hidden_size, config.num_classes) if config.num_classes else None
        # On the encoder's outputs, which at step t have seen x[:t+1] only; the decoder's have seen z,
        # hence the whole sequence, so a predictor there would see the answer.
        self.predictor = nn.Linear(hidden_size, output_size) if config.predict_next else None

    @classmethod
    def from_config(cls, config: ModelConfig | dict, seed: int | None = None) -> LSTMAutoencoder:
        """Build from a config (a checkpoint stores it as a dict); `seed` fixes the initial weights."""
        kwargs = asdict(config) if isinstance(config, ModelConfig) else dict(config)
        if seed is None:
            return cls(**kwargs)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            return cls(**kwargs)

    @classmethod
    def misfit(cls, config: dict, weights: dict) -> str | None:
        """What keeps `weights` from loading into the model `config` builds (a parameter missing, unexpected or of
        another shape), in a few words; None where they fit. The configuration itself must build (TypeError or
        ValueError otherwise). Built on the meta device: no memory, no initialisation."""
        with torch.device("meta"):
            expected = {name: tuple(tensor.shape) for name, tensor in cls.from_config(config).state_dict().items()}
        given = {name: tuple(tensor.shape) for name, tensor in weights.items()}
        for name in sorted(expected.keys() | given.keys()):
            if expected.get(name) != given.get(name):
                return f"{name} is {_shape(given.get(name))} where its configuration makes {_shape(expected.get(name))}"
        return None

    def forward(self, x: torch.Tensor) -> Output:
        encoded, (hidden, _) = self.encoder(x)
        z = hidden[-1]  # last hidden state of the top layer: (N, hidden)
        decoded = self._decode(z, x.shape[1])
        return Output(
            reconstruction=torch.tanh(self.reconstruct(decoded)),
            logits=self.classifier(z) if self.classifier is not None else None,
            prediction=self.predictor(encoded) if self.predictor is not None else None,
        )

    def _decode(self, z: torch.Tensor, steps: int) -> torch.Tensor:
        """The decoder's outputs (N, T, H). Its input is z at every step (and the step's position): the fused layer
        takes the projection of z once per sequence, where nn.LSTM would project the same z at each of the T steps."""
        if self.position is not None and steps != len(self.position):
            raise ValueError(f"this model's decoder knows {len(self.position)} positions, the input has {steps} steps")
        if not fused.usable(z) and not isinstance(self.decoder, cells.LayerNormLSTM):
            decoded, _ = self.decoder(self._decoder_inputs(z, steps))
            return decoded
        weight, bias = cells.input_weights(self.decoder)
        hidden = z.shape[1]
        per_sequence = F.linear(z, weight[:, :hidden], bias).unsqueeze(1)  # (N, 1, 4H)
        if self.position is None:
            return cells.run_projected(self.decoder, per_sequence.expand(-1, steps, -1))
        per_step = F.linear(self.position.to(per_sequence.dtype), weight[:, hidden:])  # (T, 4H), the same for all
        parts = (per_sequence.expand(-1, steps, -1), per_step.unsqueeze(0).expand(len(z), -1, -1))
        return cells.run_projected(self.decoder, parts)  # (a layer that runs step by step adds them up)

    def _decoder_inputs(self, z: torch.Tensor, steps: int) -> torch.Tensor:
        repeated = z.unsqueeze(1).expand(-1, steps, -1)
        if self.position is None:
            return repeated
        position = self.position.to(z.dtype).unsqueeze(0).expand(len(z), -1, -1)
        return torch.cat([repeated, position], dim=2)

    @torch.no_grad()
    def roll_forward(self, observed: torch.Tensor, steps: int) -> torch.Tensor:
        """Predict `steps` points after `observed` (N, t, F), feeding each prediction back as the next input."""
        if self.predictor is None:
            raise ValueError("roll_forward needs a model built with predict_next=True")
        encoded, state = self.encoder(observed)
        point = self.predictor(encoded[:, -1:])
        predictions = [point]
        for _ in range(steps - 1):
            encoded, state = self.encoder(point, state)
            point = self.predictor(encoded)
            predictions.append(point)
        return torch.cat(predictions, dim=1)
