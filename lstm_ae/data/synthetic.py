"""Synthetic signals: uniform noise in [0, 1] with an 11-point dip (x 0.1) centred at a random step in 20..30.

splits = synthetic.load()            # 6000 / 2000 / 2000 sequences of 50 steps, shaped (N, 50, 1)
splits.meta["dip_centre"]["test"]    # where each test sequence's dip is centred
"""

from __future__ import annotations

import torch

from lstm_ae.data.splits import Split, Splits, split_sizes

DIP_CENTRES = (20, 30)  # inclusive range of the dip's centre
DIP_HALF_WIDTH = 5  # the dip covers centre-5 .. centre+5: 11 points
DIP_FACTOR = 0.1


def load(n: int = 10_000, length: int = 50, seed: int = 0) -> Splits:
    if length < DIP_CENTRES[1] + DIP_HALF_WIDTH + 1:
        raise ValueError(f"length must be at least {DIP_CENTRES[1] + DIP_HALF_WIDTH + 1} to hold the dip, got {length}")
    if n < 3:
        raise ValueError(f"n must be at least 3 to fill three splits, got {n}")
    generator = torch.Generator().manual_seed(seed)  # CPU generator: same data on any machine
    x = torch.rand(n, length, generator=generator)
    centres = torch.randint(DIP_CENTRES[0], DIP_CENTRES[1] + 1, (n,), generator=generator)
    in_dip = (torch.arange(length) - centres[:, None]).abs() <= DIP_HALF_WIDTH
    x = torch.where(in_dip, x * DIP_FACTOR, x).unsqueeze(-1)

    # The sequences are i.i.d., so consecutive blocks are as good as a shuffled split.
    bounds = torch.tensor((0, *split_sizes(n, (0.6, 0.2, 0.2)))).cumsum(0).tolist()
    parts = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    names = ("train", "val", "test")
    return Splits(
        *(Split(x[part].contiguous()) for part in parts),
        meta={"seed": seed, "dip_centre": {name: centres[part] for name, part in zip(names, parts)}},
    )
