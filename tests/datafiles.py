"""Small data files in the real formats (MNIST IDX, S&P 500 CSV), written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lstm_ae.data import mnist


def write_mnist(root: Path, n_train: int = 3000, n_test: int = 500, seed: int = 0) -> Path:
    """IDX files under root/MNIST/raw/ as torchvision expects; digit d is a bright bar on rows 2d+3..2d+5,
    over noise, so a model can learn both to reconstruct and to classify them."""
    rng = np.random.default_rng(seed)
    for train, n in ((True, n_train), (False, n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for image, digit in zip(images, labels):
            image[2 * digit + 3 : 2 * digit + 6, 4:24] = 255
        mnist.write(root, torch.from_numpy(images), torch.from_numpy(labels), train)
    return root


def stock_prices(tickers=("AAA", "BBB", "CCC", "DDD", "EEE"), start="2013-12-16", end="2018-01-12", seed=0):
    """Long table (date, ticker, high) of positive random walks on business days, wider than 2014-2017."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, end)
    rows = []
    for i, ticker in enumerate(tickers):
        high = (20 + 10 * i) * np.exp(np.cumsum(rng.normal(0, 0.01, len(dates))))
        rows.append(pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "ticker": ticker, "high": high.round(2)}))
    return pd.concat(rows, ignore_index=True)


def write_stocks(path: Path, prices: pd.DataFrame, layout: str = "kaggle") -> Path:
    """Write `prices` in Kaggle's all_stocks_5yr.csv layout or the course file's; gzipped if path ends in .gz."""
    table = prices.assign(open=prices.high - 1, low=prices.high - 2, close=prices.high - 0.5, volume=1000)
    if layout == "kaggle":
        table = table.rename(columns={"ticker": "Name"})[["date", "open", "high", "low", "close", "volume", "Name"]]
    else:
        table = table.rename(columns={"ticker": "symbol"})[["symbol", "date", "open", "high", "low", "close", "volume"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)  # pandas gzips when the name ends in .gz
    return path


def business_days(start="2014-01-01", end="2017-12-31") -> int:
    return len(pd.bdate_range(start, end))
