"""The LSTM autoencoder: encode a sequence into z, decode z repeated T times, reconstruct every step.

model = LSTMAutoencoder(input_size=1, hidden_size=40)              # reconstruction only
model = LSTMAutoencoder(28, 64, num_classes=10)                    # + a classifier on z
model = LSTMAutoencoder(1, 60, predict_next=True)                  # + a causal next-step predictor
model = LSTMAutoencoder(1, 64, num_classes=10, encoder_cell="layernorm", gate_bias="chrono", steps=784)
out = model(x)          # out.reconstruction (N, T, F), out.logits (N, C), out.prediction (N, T, F)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from lstm_ae import cells


@dataclass(frozen=True)
class ModelConfig:
    input_size: int  # features per step: 1 for signals and prices, 28 for MNIST rows
    hidden_size: int  # size of z and of both LSTMs' states
    output_size: int | None = None  # features reconstructed per step; None means input_size
    num_layers: int = 1  # stacked LSTM layers in the encoder and in the decoder
    num_classes: int = 0  # > 0 adds a linear classifier on z
    predict_next: bool = False  # adds a linear predictor of x[t+1] on the encoder's output at t
    # The recipe (lstm_ae.cells): the encoder's cell, and how both LSTMs start.
    encoder_cell: str = "lstm"  # "lstm" (nn.LSTM, fused kernels) or "layernorm" (LayerNormLSTM)
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
        cells.check(self.encoder_cell, self.gate_bias, self.recurrent_init, self.steps)


class Output(NamedTuple):
    reconstruction: torch.Tensor  # (N, T, output_size)
    logits: torch.Tensor | None  # (N, num_classes)
    prediction: torch.Tensor | None  # (N, T, output_size); prediction[:, t] estimates x[:, t + 1]


class LSTMAutoencoder(nn.Module):
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int | None = None,
        num_layers: int = 1,
        num_classes: int = 0,
        predict_next: bool = False,
        encoder_cell: str = "lstm",
        gate_bias: str = "default",
        recurrent_init: str = "default",
        steps: int | None = None,
    ):
        super().__init__()
        self.config = ModelConfig(
            input_size,
            hidden_size,
            output_size,
            num_layers,
            num_classes,
            predict_next,
            encoder_cell,
            gate_bias,
            recurrent_init,
            steps,
        )
        output_size = output_size or input_size
        self.encoder = cells.make_lstm(encoder_cell, input_size, hidden_size, num_layers)
        self.decoder = nn.LSTM(hidden_size, hidden_size, num_layers, batch_first=True)
        for lstm in (self.encoder, self.decoder):
            cells.initialise(lstm, gate_bias, recurrent_init, steps)
        self.reconstruct = nn.Linear(hidden_size, output_size)
        self.classifier = nn.Linear(hidden_size, num_classes) if num_classes else None
        # On the encoder's outputs, which at step t have seen x[:t+1] only; the decoder's have seen z,
        # hence the whole sequence, so a predictor there would see the answer.
        self.predictor = nn.Linear(hidden_size, output_size) if predict_next else None

    @classmethod
    def from_config(cls, config: ModelConfig | dict, seed: int | None = None) -> LSTMAutoencoder:
        """Build from a config (a checkpoint stores it as a dict); `seed` fixes the initial weights."""
        kwargs = asdict(config) if isinstance(config, ModelConfig) else dict(config)
        if seed is None:
            return cls(**kwargs)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            return cls(**kwargs)

    def forward(self, x: torch.Tensor) -> Output:
        encoded, (hidden, _) = self.encoder(x)
        z = hidden[-1]  # last hidden state of the top layer: (N, hidden)
        decoded, _ = self.decoder(z.unsqueeze(1).expand(-1, x.shape[1], -1))
        return Output(
            reconstruction=torch.tanh(self.reconstruct(decoded)),
            logits=self.classifier(z) if self.classifier is not None else None,
            prediction=self.predictor(encoded) if self.predictor is not None else None,
        )

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
