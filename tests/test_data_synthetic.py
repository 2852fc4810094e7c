import pytest
import torch

from lstm_ae.data import synthetic


def test_shapes_and_split_sizes():
    splits = synthetic.load()
    assert [len(part) for _, part in splits.items()] == [6000, 2000, 2000]
    assert splits.train.x.shape == (6000, 50, 1) and splits.train.x.dtype == torch.float32
    assert splits.train.y is None


def test_every_sequence_has_an_eleven_point_dip_centred_in_20_to_30():
    splits = synthetic.load(n=3000, seed=1)
    for name, part in splits.items():
        x = part.x[..., 0]
        centres = splits.meta["dip_centre"][name]
        assert centres.min() >= 20 and centres.max() <= 30
        steps = torch.arange(50)
        in_dip = (steps - centres[:, None]).abs() <= 5
        assert (in_dip.sum(1) == 11).all()
        assert (x[in_dip] <= 0.1).all()  # the dip: uniform [0,1] scaled by 0.1
        outside = x[~in_dip]
        assert outside.min() >= 0 and outside.max() <= 1
        # Uniform in [0,1] outside the dip: mean 1/2, variance 1/12, a tenth below 0.1.
        assert abs(outside.mean() - 0.5) < 0.01
        assert abs(outside.var() - 1 / 12) < 0.005
        assert abs((outside < 0.1).float().mean() - 0.1) < 0.01
        dip = x[in_dip]
        assert abs(dip.mean() - 0.05) < 0.002


def test_centres_cover_both_ends_uniformly():
    centres = torch.cat(list(synthetic.load(seed=2).meta["dip_centre"].values()))
    counts = torch.bincount(centres, minlength=31)[20:]
    assert (counts > 0).all() and len(counts) == 11
    assert counts.min() > 0.8 * 10_000 / 11 and counts.max() < 1.2 * 10_000 / 11


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = synthetic.load(n=100, seed=5), synthetic.load(n=100, seed=5), synthetic.load(n=100, seed=6)
    assert torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.test.x, c.test.x)


def test_known_values_for_seed_0_are_stable_across_machines():
    # torch's CPU generator gives the same numbers on every platform: pinned, so a change in generation shows.
    splits = synthetic.load(n=10, seed=0)
    assert splits.train.x[0, :3, 0].tolist() == pytest.approx([0.4962566, 0.7682218, 0.0884774], abs=1e-6)
    assert splits.meta["dip_centre"]["train"].tolist() == [26, 24, 22, 24, 22, 27]
