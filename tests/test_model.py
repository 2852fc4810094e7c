import pytest
import torch

from lstm_ae.model import LSTMAutoencoder, ModelConfig


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
