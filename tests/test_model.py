import re
from dataclasses import asdict

import pytest
import torch
from torch import nn

from lstm_ae.cells import LayerNormLSTM
from lstm_ae.model import LSTMAutoencoder, ModelConfig, position_code


@pytest.mark.parametrize("num_layers", [1, 2])
def test_output_shapes_for_each_head(num_layers):
    x = torch.rand(4, 12, 3)
    plain = LSTMAutoencoder(3, 8, num_layers=num_layers)(x)
    assert plain.reconstruction.shape == (4, 12, 3) and plain.logits is None and plain.prediction is None
    classify = LSTMAutoencoder(3, 8, num_layers=num_layers, num_classes=10)(x)
    assert classify.logits.shape == (4, 10)
    predict = LSTMAutoencoder(3, 8, num_layers=num_layers, predict_next=True)(x)
    assert predict.prediction.shape == (4, 12, 3)
    assert LSTMAutoencoder(3, 8, output_size=2)(x).reconstruction.shape == (4, 12, 2)


def test_reconstruction_is_bounded_by_tanh():
    out = LSTMAutoencoder(1, 4)(torch.randn(2, 5, 1) * 100)
    assert out.reconstruction.abs().max() <= 1


def test_predictor_is_causal():
    model = LSTMAutoencoder(2, 8, predict_next=True)
    x = torch.rand(3, 15, 2)
    k = 9
    changed = x.clone()
    changed[:, k:] = torch.rand(3, 15 - k, 2)
    before, after = model(x).prediction, model(changed).prediction
    assert torch.equal(before[:, :k], after[:, :k])
    assert not torch.allclose(before[:, k:], after[:, k:])
    # The reconstruction, by design, is not causal: it decodes z, which saw the whole sequence.
    assert not torch.allclose(model(x).reconstruction[:, :k], model(changed).reconstruction[:, :k])


def test_config_round_trip_and_seeded_init():
    model = LSTMAutoencoder(28, 16, num_classes=10)
    assert model.config == ModelConfig(28, 16, num_classes=10)
    a = LSTMAutoencoder.from_config(model.config, seed=3)
    b = LSTMAutoencoder.from_config({"input_size": 28, "hidden_size": 16, "num_classes": 10}, seed=3)
    c = LSTMAutoencoder.from_config(model.config, seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.encoder.weight_ih_l0, c.encoder.weight_ih_l0)


def test_seeded_init_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    LSTMAutoencoder.from_config(ModelConfig(1, 4), seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "field, value", [("hidden_size", 0), ("input_size", 0), ("num_layers", 0), ("num_classes", -1)]
)
def test_impossible_shapes_are_refused(field, value):
    kwargs = {"input_size": 1, "hidden_size": 4, field: value}
    with pytest.raises(ValueError, match=field):
        LSTMAutoencoder(**kwargs)


def test_position_code_tells_every_step_apart_and_is_the_row_and_column_of_mnists_pixels():
    code = position_code(784)
    assert code.shape == (784, 56) and torch.equal(code.sum(1), torch.full((784,), 2.0))
    row, column = code[:, :28].argmax(1), code[:, 28:].argmax(1)
    assert torch.equal(row * 28 + column, torch.arange(784))
    for steps in (1, 2, 28, 50, 53):  # every length: each step has its own code
        assert len(set(map(tuple, position_code(steps).tolist()))) == steps


@pytest.mark.parametrize("decoder_cell", ["lstm", "layernorm"])
def test_the_decoder_options_build_what_they_claim(decoder_cell):
    x = torch.rand(3, 50, 1)
    repeat = LSTMAutoencoder(1, 8, decoder_cell=decoder_cell, steps=50)
    position = LSTMAutoencoder(1, 8, decoder_cell=decoder_cell, decoder_input="position", steps=50)
    kind = LayerNormLSTM if decoder_cell == "layernorm" else nn.LSTM
    assert isinstance(repeat.decoder, kind) and isinstance(position.decoder, kind)
    assert position(x).reconstruction.shape == repeat(x).reconstruction.shape == (3, 50, 1)
    # The study's decoder reads z alone; with a position it reads z and 2 x 8 one-hots (50 steps: 7 x 8).
    assert repeat._decoder_inputs(torch.rand(3, 8), 50).shape == (3, 50, 8)
    inputs = position._decoder_inputs(torch.rand(3, 8), 50)
    assert inputs.shape == (3, 50, 24) and torch.equal(inputs[0, :, 8:], position_code(50))


def test_the_position_carries_nothing_about_the_input():
    # Two inputs with the same z decode alike: the position is the same for every sequence.
    model = LSTMAutoencoder(1, 8, decoder_input="position", steps=20)
    z = torch.rand(1, 8).expand(2, -1)
    decoded, _ = model.decoder(model._decoder_inputs(z, 20))
    assert torch.equal(decoded[0], decoded[1])
    with pytest.raises(ValueError, match="knows 20 positions, the input has 21 steps"):
        model(torch.rand(2, 21, 1))


def test_the_decoder_options_are_kept_in_the_config():  # (their refusals: test_cells.py)
    model = LSTMAutoencoder(1, 8, decoder_cell="layernorm", decoder_input="position", gate_bias="chrono", steps=30)
    rebuilt = LSTMAutoencoder.from_config(asdict(model.config))
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 30, 1)
    assert rebuilt.config == model.config and torch.equal(rebuilt(x).reconstruction, model(x).reconstruction)


def test_a_checkpoint_of_the_studys_decoder_loads_as_it_did():
    # Configs saved before the decoder options existed have neither field: they build the study's decoder.
    saved = {"input_size": 1, "hidden_size": 8, "num_classes": 10, "steps": 30}
    model = LSTMAutoencoder.from_config(saved)
    assert model.config.decoder_cell == "lstm" and model.config.decoder_input == "repeat"
    assert "position" not in model.state_dict()  # the position code is rebuilt, never stored


@pytest.mark.parametrize(
    "config",
    [
        {"input_size": 1, "hidden_size": 8, "num_layers": 2, "predict_next": True},
        {"input_size": 1, "hidden_size": 8, "num_classes": 10, "encoder_cell": "layernorm", "gate_bias": "chrono",
         "decoder_cell": "layernorm", "decoder_input": "position", "steps": 30},
    ],
    ids=["study", "every-option"],
)  # fmt: skip
def test_weights_that_do_not_fit_a_configuration_are_told_in_a_few_words(config):
    weights = LSTMAutoencoder.from_config(config).state_dict()
    assert LSTMAutoencoder.misfit(config, weights) is None
    wider = LSTMAutoencoder.misfit({**config, "hidden_size": 9}, weights)
    given, made = re.fullmatch(r"\S+ is ([\dx]+) where its configuration makes ([\dx]+)", wider).groups()
    assert given != made
    bias = weights.pop("reconstruct.bias")
    assert LSTMAutoencoder.misfit(config, weights) == "reconstruct.bias is absent where its configuration makes 1"
    weights["reconstruct.bias"], weights["stray"] = bias, torch.zeros(2, 3)
    assert LSTMAutoencoder.misfit(config, weights) == "stray is 2x3 where its configuration makes absent"
