"""The recipe's initialisations and the layer-normalised cell: each sets what it claims."""

import math

import pytest
import torch
from torch import nn

from lstm_ae.cells import LayerNormLSTM, initialise, layers
from lstm_ae.model import LSTMAutoencoder

KINDS = {"lstm": lambda: nn.LSTM(3, 8, 2, batch_first=True), "layernorm": lambda: LayerNormLSTM(3, 8, 2)}


def gate_biases(lstm):
    """Each layer's total bias per gate (i, f, g, o), input and recurrent biases added."""
    totals = []
    for _, bias, recurrent_bias in layers(lstm):
        total = bias + (recurrent_bias if recurrent_bias is not None else 0)
        totals.append(total.detach().split(bias.shape[0] // 4))
    return totals


@pytest.mark.parametrize("kind", KINDS)
def test_chrono_sets_forget_and_input_biases_from_the_sequence_length(kind):
    torch.manual_seed(0)
    lstm = KINDS[kind]()
    initialise(lstm, gate_bias="chrono", steps=784)
    for (_, _, recurrent_bias), (i, f, g, o) in zip(layers(lstm), gate_biases(lstm)):
        assert f.min() >= 0 and f.max() <= math.log(783)  # log U(1, T - 1)
        assert f.unique().numel() == 8 and f.mean() > 4  # a timescale per cell, most of them long
        assert torch.equal(i, -f)
        assert torch.equal(o, torch.zeros(8))
        if recurrent_bias is not None:
            assert torch.equal(recurrent_bias, torch.zeros(32))
        if kind == "lstm":
            assert torch.equal(g, torch.zeros(8))
        else:  # the guard against an exactly-zero state under layer norm (see initialise)
            assert 0 < g.abs().max() <= 1 / math.sqrt(8)


@pytest.mark.parametrize("kind", KINDS)
def test_forget1_makes_the_forget_gate_bias_one_and_keeps_the_others(kind):
    torch.manual_seed(0)
    before = gate_biases(KINDS[kind]())
    torch.manual_seed(0)
    lstm = KINDS[kind]()
    initialise(lstm, gate_bias="forget1")
    for (i0, _, g0, o0), (i, f, g, o) in zip(before, gate_biases(lstm)):
        assert torch.equal(f, torch.ones(8))
        assert torch.allclose(i, i0) and torch.allclose(g, g0) and torch.allclose(o, o0)


@pytest.mark.parametrize("kind", KINDS)
def test_default_leaves_pytorchs_initialisation(kind):
    torch.manual_seed(0)
    untouched = KINDS[kind]()
    torch.manual_seed(0)
    lstm = KINDS[kind]()
    initialise(lstm)
    for (name, a), b in zip(untouched.state_dict().items(), lstm.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kind", KINDS)
def test_orthogonal_makes_each_gates_recurrent_block_orthogonal(kind):
    lstm = KINDS[kind]()
    initialise(lstm, recurrent="orthogonal")
    for weight, _, _ in layers(lstm):
        for block in weight.detach().split(8):
            assert torch.allclose(block @ block.T, torch.eye(8), atol=1e-5)


@pytest.mark.parametrize(
    "option, message",
    [
        ({"gate_bias": "zeros"}, "gate_bias must be one of default, forget1, chrono"),
        ({"recurrent_init": "identity"}, "recurrent_init"),
        ({"encoder_cell": "gru"}, "encoder_cell"),
        ({"gate_bias": "chrono"}, "chrono' needs the sequence length"),
        ({"decoder_cell": "gru"}, "decoder_cell must be one of lstm, layernorm"),
        ({"decoder_input": "noise"}, "decoder_input must be one of repeat, position"),
        ({"decoder_input": "position"}, "decoder_input 'position' needs the sequence length"),
    ],
)
def test_unknown_choices_are_refused_by_name(option, message):
    with pytest.raises(ValueError, match=message):
        LSTMAutoencoder(1, 4, **option)


def test_layernorm_lstm_has_nn_lstms_interface_and_carries_its_state():
    lstm = LayerNormLSTM(2, 6, num_layers=2)
    x = torch.rand(3, 10, 2)
    out, (h, c) = lstm(x)
    assert out.shape == (3, 10, 6) and h.shape == c.shape == (2, 3, 6)
    assert torch.equal(out[:, -1], h[-1])
    first, state = lstm(x[:, :4])
    rest, (h2, c2) = lstm(x[:, 4:], state)
    assert torch.allclose(torch.cat([first, rest], 1), out, atol=1e-6)
    assert torch.allclose(h2, h, atol=1e-6) and torch.allclose(c2, c, atol=1e-6)


def test_layernorm_encoder_keeps_finite_gradients_through_a_long_black_stretch():
    # A digit's first rows are black: with chrono's zero cell-input bias the state would stay exactly 0 there, and
    # layer norm's backward would blow up by 1/sqrt(eps) per step (the trap met when the recipe was measured).
    model = LSTMAutoencoder(1, 16, num_classes=10, encoder_cell="layernorm", gate_bias="chrono", steps=400)
    x = torch.zeros(4, 400, 1)
    x[:, 300:] = 1.0
    out = model(x)
    (out.reconstruction.square().mean() + out.logits.logsumexp(1).mean()).backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert model.encoder.layers[0].recurrent.weight.grad.abs().sum() > 0


def test_the_layernorm_model_keeps_its_recipe_in_its_config():
    model = LSTMAutoencoder(1, 8, encoder_cell="layernorm", gate_bias="chrono", recurrent_init="orthogonal", steps=50)
    rebuilt = LSTMAutoencoder.from_config(model.config)
    assert isinstance(rebuilt.encoder, LayerNormLSTM) and isinstance(rebuilt.decoder, nn.LSTM)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 50, 1)
    assert torch.equal(rebuilt(x).reconstruction, model(x).reconstruction)
