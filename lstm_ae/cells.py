"""Recurrent layers and their initialisation: what makes the 784-step pixel sequence learnable.

    LayerNormLSTM(1, 64)                    # the interface of nn.LSTM(batch_first=True), layer-normalised
    initialise(lstm, gate_bias="chrono", recurrent="orthogonal", steps=784)

`nn.LSTM` (oneDNN on CPUs, cuDNN on GPUs) is the default; the layer-normalised cell leaves the chance plateau of
long sequences within an epoch (Ba et al. 2016, "Layer Normalization"; the measurements are in the README's pixel
section). On a CPU the layer-normalised layer, and every decoder, run as one fused call over the sequence
(`lstm_ae.fused`); elsewhere step by step, in PyTorch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lstm_ae import fused

GATE_BIASES = ("default", "forget1", "chrono")  # PyTorch's uniform init; forget gate 1; Tallec & Ollivier 2018
RECURRENT_INITS = ("default", "orthogonal")
CELLS = ("lstm", "layernorm")


class LayerNormLSTMLayer(nn.Module):
    """One layer: gates = W_x x + b + LN(W_h h); c = f c + i g; h = o tanh(LN(c)).

    No layer norm on the input projection: with one feature per step (a pixel) it would erase the pixel's value.
    Gate order i, f, g, o as in nn.LSTM, so `initialise` treats both alike."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.input_projection = nn.Linear(input_size, 4 * hidden_size)  # holds the gate biases
        self.recurrent = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.recurrent_norm = nn.LayerNorm(4 * hidden_size)
        self.cell_norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        if fused.usable(x):
            return self.run(fused.time_major_linear(x, self.input_projection.weight, self.input_projection.bias), state)
        return self.run(self.input_projection(x), state)

    def run(self, projected: torch.Tensor | tuple, state: tuple[torch.Tensor, torch.Tensor]):
        """The layer from its input projection (N, T, 4H; or two parts, see `fused.run`) on: fused on the CPU, else
        step by step."""
        if fused.usable(projected[0] if isinstance(projected, tuple) else projected):
            return fused.run(projected, state, self.recurrent.weight, (self.recurrent_norm, self.cell_norm))
        if isinstance(projected, tuple):
            projected = sum(projected)
        h, c = state
        outputs = []
        # Steps taken by unbind: indexing projected[:, t] in the loop made backward 25x slower (measured).
        for step in projected.unbind(1):
            gates = step + self.recurrent_norm(self.recurrent(h))
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.cell_norm(c))
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c)


class LayerNormLSTM(nn.Module):
    """Stacked LayerNormLSTMLayers with nn.LSTM's batch-first interface: (outputs, (h_n, c_n))."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.hidden_size = hidden_size
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(LayerNormLSTMLayer(size, hidden_size) for size in sizes)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        if state is None:
            zeros = x.new_zeros(len(self.layers), x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        last_h, last_c = [], []
        for layer, h, c in zip(self.layers, *state):
            x, (h, c) = layer(x, (h, c))
            last_h.append(h)
            last_c.append(c)
        return x, (torch.stack(last_h), torch.stack(last_c))


def check(
    encoder_cell: str = "lstm",
    gate_bias: str = "default",
    recurrent_init: str = "default",
    steps: int | None = None,
    decoder_cell: str = "lstm",
) -> None:
    """ValueError naming the option, where a choice is not one of the known ones."""
    for name, value, choices in (
        ("encoder_cell", encoder_cell, CELLS),
        ("decoder_cell", decoder_cell, CELLS),
        ("gate_bias", gate_bias, GATE_BIASES),
        ("recurrent_init", recurrent_init, RECURRENT_INITS),
    ):
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    if gate_bias == "chrono" and (steps is None or steps < 3):
        raise ValueError(f"gate_bias 'chrono' needs the sequence length: steps >= 3, got {steps}")


def make_lstm(cell: str, input_size: int, hidden_size: int, num_layers: int) -> nn.Module:
    if cell == "layernorm":
        return LayerNormLSTM(input_size, hidden_size, num_layers)
    return nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)


def input_weights(lstm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (4H, input), b (4H,)) of the first layer's input projection W x + b, biases summed, for either kind."""
    if isinstance(lstm, LayerNormLSTM):
        projection = lstm.layers[0].input_projection
        return projection.weight, projection.bias
    return lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0


def run_projected(lstm: nn.Module, projected: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The outputs (N, T, H) of an LSTM of either kind from a zero state, given its first layer's input projection
    (N, T, 4H; see `input_weights`), which a caller computes once per sequence where the input repeats; two parts
    that add up to it (see `fused.run`) where the fused layer runs. nn.LSTM takes inputs only: where the fused layer
    does not run, this is for the layer-normalised kind alone."""
    first = projected[0] if isinstance(projected, tuple) else projected
    zeros = first.new_zeros(first.shape[0], lstm.hidden_size)
    if isinstance(lstm, LayerNormLSTM):
        x, _ = lstm.layers[0].run(projected, (zeros, zeros))
        for layer in lstm.layers[1:]:
            x, _ = layer(x, (zeros, zeros))
        return x
    x, _ = fused.run(projected, (zeros, zeros), lstm.weight_hh_l0)
    for k in range(1, lstm.num_layers):
        weight_ih, weight_hh = getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}")
        bias = getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")
        x, _ = fused.run(fused.time_major_linear(x, weight_ih, bias), (zeros, zeros), weight_hh)
    return x


def layers(lstm: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """(recurrent weight (4H, H), input bias (4H,), recurrent bias or None) of each layer, for either kind."""
    if isinstance(lstm, LayerNormLSTM):
        return [(layer.recurrent.weight, layer.input_projection.bias, None) for layer in lstm.layers]
    return [
        (getattr(lstm, f"weight_hh_l{k}"), getattr(lstm, f"bias_ih_l{k}"), getattr(lstm, f"bias_hh_l{k}"))
        for k in range(lstm.num_layers)
    ]


@torch.no_grad()
def initialise(
    lstm: nn.Module, gate_bias: str = "default", recurrent: str = "default", steps: int | None = None
) -> None:
    """Set the gate biases and recurrent weights of every layer of an LSTM (nn.LSTM or LayerNormLSTM).

    gate_bias: "default" keeps PyTorch's uniform init; "forget1" makes the forget gate's total bias 1 (the other
    gates keep theirs); "chrono" (Tallec & Ollivier 2018) sets the forget bias to log(u), u ~ U(1, steps - 1),
    so the cells remember over up to `steps` steps, the input gate's bias to -log(u), and the others to 0.
    recurrent: "orthogonal" makes each gate's (H, H) block of the recurrent weight orthogonal.
    Under chrono a layer-normalised cell keeps a small random cell-input bias: with a zero one, the
    hidden state stays exactly 0 through a black stretch of pixels, where layer norm's backward divides by
    sqrt(eps) at every step and the gradients overflow within one batch (measured)."""
    check(gate_bias=gate_bias, recurrent_init=recurrent, steps=steps)
    for weight, bias, recurrent_bias in layers(lstm):
        hidden = weight.shape[1]
        if recurrent == "orthogonal":
            for block in weight.split(hidden):
                nn.init.orthogonal_(block)
        if gate_bias == "default":
            continue
        i, f, g, o = bias.split(hidden)
        if gate_bias == "forget1":
            f.fill_(1.0)
            if recurrent_bias is not None:
                recurrent_bias.split(hidden)[1].zero_()  # nn.LSTM adds both biases: the forget gate's total is 1
        else:
            if recurrent_bias is not None:
                recurrent_bias.zero_()  # nn.LSTM adds both biases: the input one says it all
            timescales = torch.empty(hidden).uniform_(1, steps - 1)
            f.copy_(timescales.log())
            i.copy_(-timescales.log())
            o.zero_()
            if isinstance(lstm, LayerNormLSTM):
                g.uniform_(-1 / math.sqrt(hidden), 1 / math.sqrt(hidden))
            else:
                g.zero_()
