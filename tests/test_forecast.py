import pytest
import torch

from lstm_ae.forecast import multi_step, one_step, persistence
from lstm_ae.model import LSTMAutoencoder


@pytest.fixture
def model():
    return LSTMAutoencoder.from_config({"input_size": 1, "hidden_size": 8, "predict_next": True}, seed=0)


def test_one_step_is_the_predictor_head(model):
    x = torch.rand(3, 20, 1)
    model.eval()
    with torch.no_grad():
        expected = model(x).prediction
    # Same maths; the kernels chosen with and without autograd may differ in the last bits.
    torch.testing.assert_close(one_step(model, x), expected, rtol=0, atol=1e-6)


def test_multi_step_uses_only_the_observed_part(model):
    x = torch.rand(4, 20, 1)
    hidden_changed = x.clone()
    hidden_changed[:, 10:] = torch.rand(4, 10, 1)
    forecast = multi_step(model, x, observed=10)
    assert forecast.shape == (4, 10, 1)
    assert torch.equal(forecast, multi_step(model, hidden_changed, observed=10))
    observed_changed = x.clone()
    observed_changed[:, 9] += 1
    assert not torch.allclose(forecast, multi_step(model, observed_changed, observed=10))


def test_multi_step_first_point_equals_one_step(model):
    x = torch.rand(2, 12, 1)
    assert torch.allclose(multi_step(model, x, observed=5)[:, 0], one_step(model, x)[:, 4], atol=1e-6)


def test_multi_step_feeds_back_its_own_predictions(model):
    x = torch.rand(2, 12, 1)
    forecast = multi_step(model, x, observed=5)
    fed_back = torch.cat([x[:, :5], forecast], dim=1)
    # Running the whole causal predictor over observed + forecast must reproduce each next forecast.
    assert torch.allclose(one_step(model, fed_back)[:, 4:-1], forecast, atol=1e-5)


def test_persistence_by_hand():
    x = torch.tensor([[1.0, 2.0, 4.0, 3.0, 5.0]]).unsqueeze(-1)
    one = persistence(x)
    assert torch.equal(one[0, :-1, 0], torch.tensor([1.0, 2.0, 4.0, 3.0]))
    # one-step absolute error against x[t+1]: |2-1| + |4-2| + |3-4| + |5-3| = 6 over 4 steps
    assert (one[:, :-1] - x[:, 1:]).abs().mean().item() == pytest.approx(1.5)
    multi = persistence(x, observed=2)
    assert multi[0, :, 0].tolist() == [2.0, 2.0, 2.0]
    assert (multi - x[:, 2:]).abs().mean().item() == pytest.approx((2 + 1 + 3) / 3)


def test_needs_a_predictor_and_a_sensible_horizon(model):
    with pytest.raises(ValueError, match="predict_next"):
        one_step(LSTMAutoencoder(1, 4), torch.rand(1, 5, 1))
    with pytest.raises(ValueError, match="observed"):
        multi_step(model, torch.rand(1, 5, 1), observed=5)
