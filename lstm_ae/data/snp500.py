"""S&P 500 daily `high` prices per stock, cut into sequences and normalised per stock or per sequence.

    splits = snp500.load("../shared/data/snp500/all_stocks_5yr.csv.gz")  # 2014-2017: 1007 days = 19 x 53
    splits.meta["tickers"]["test"]                          # the stocks of the test split
    dollars = splits.meta["normalizer"]["test"].invert(splits.test.x)

Reads Kaggle's `all_stocks_5yr.csv` (date,open,high,low,close,volume,Name) and the course file
`SP 500 Stock Prices 2014-2017.csv` (symbol,date,open,high,low,close,volume), plain or gzipped.
Stocks, not sequences, are split between train/val/test, so no stock is seen in two splits.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lstm_ae.data.splits import (
    DataError,
    Split,
    Splits,
    seeded_permutation,
    split_sizes,
)

TICKER_COLUMNS = ("Name", "symbol")  # Kaggle's layout, the course's layout
EXPECTED_LAYOUT = "date,open,high,low,close,volume,Name (Kaggle) or symbol,date,open,high,low,close,volume (course)"
NORMALIZERS = ("study", "minmax", "first")


@dataclass
class Affine:
    """An exact, invertible per-sequence normalisation: normalised = (x - offset) / scale.

    `offset` and `scale` are shaped (N, 1, 1), one pair per sequence, so any slice of sequences
    can be brought back to dollars with `invert(y, rows)`.
    """

    offset: torch.Tensor
    scale: torch.Tensor

    def __len__(self) -> int:
        return len(self.offset)

    def __getitem__(self, rows) -> Affine:
        return Affine(self.offset[rows], self.scale[rows])

    def apply(self, x: torch.Tensor, rows=slice(None)) -> torch.Tensor:
        return (x - self.offset[rows]) / self.scale[rows]

    def invert(self, y: torch.Tensor, rows=slice(None)) -> torch.Tensor:
        return y * self.scale[rows] + self.offset[rows]


def load(
    csv_path: str | Path,
    seq_len: int = 53,
    start: str = "2014-01-01",
    end: str = "2017-12-31",
    normalize: str = "study",
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> Splits:
    """Sequences of `seq_len` days, (N, seq_len, 1), normalised with `normalize`:

    - `study`: the original study's, per stock: (x - min) / max, then divided by twice its mean;
    - `minmax`: per stock, (x - min) / (max - min);
    - `first`: per sequence, x / x_0 - 1: uses nothing after the sequence's first day (honest for forecasting).
    """
    if normalize not in NORMALIZERS:
        raise ValueError(f"unknown normaliser {normalize!r}: use one of {', '.join(NORMALIZERS)}")
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    prices, dropped = _complete_stocks(_period(_read_highs(csv_path), csv_path, start, end))
    if prices.shape[1] == 0:
        raise DataError(
            f"{csv_path}: none of its {len(dropped)} stocks has a positive, finite price on every trading day "
            f"from {start} to {end}; use a file with complete price series"
        )
    per_stock = len(prices) // seq_len
    if per_stock == 0:
        raise ValueError(f"seq_len {seq_len} is longer than the {len(prices)} trading days from {start} to {end}")
    prices = prices.iloc[: per_stock * seq_len]

    order = seeded_permutation(prices.shape[1], seed).tolist()
    sizes = split_sizes(prices.shape[1], split)
    if min(sizes) == 0:
        raise DataError(
            f"{csv_path}: {prices.shape[1]} complete stock(s) from {start} to {end} cannot make a train/validation/test "
            f"split of {'/'.join(f'{f:g}' for f in split)} by stock (sizes {sizes}); use a file with more stocks"
        )
    bounds = np.cumsum((0, *sizes))
    names = ("train", "val", "test")
    tickers = {name: sorted(prices.columns[order[a:b]]) for name, a, b in zip(names, bounds, bounds[1:])}

    parts, normalizers = {}, {"kind": normalize}
    for name in names:
        series = torch.tensor(prices[tickers[name]].to_numpy().T, dtype=torch.float64)  # (stocks, days)
        x = series.reshape(-1, seq_len, 1)  # stock-major: sequence i belongs to tickers[i // per_stock]
        affine = _fit_normalizer(normalize, series, x, per_stock)
        parts[name] = Split(affine.apply(x).float())
        normalizers[name] = Affine(affine.offset.float(), affine.scale.float())
    meta = {
        "seed": seed,
        "normalizer": normalizers,
        "tickers": tickers,
        "sequences_per_stock": per_stock,
        "dates": [d.strftime("%Y-%m-%d") for d in prices.index],
        "dropped": len(dropped),
        "dropped_tickers": dropped,
    }
    return Splits(parts["train"], parts["val"], parts["test"], meta=meta)


def series(
    csv_path: str | Path,
    tickers: tuple[str, ...] = ("AMZN", "GOOGL"),
    start: str = "2014-01-01",
    end: str = "2017-12-31",
) -> pd.DataFrame:
    """The raw daily high of each ticker, indexed by date (one column per ticker), in dollars."""
    prices = _period(_read_highs(csv_path), csv_path, start, end)
    unknown = [t for t in tickers if t not in prices.columns]
    if unknown:
        raise DataError(
            f"unknown ticker {', '.join(unknown)} in {csv_path}; known ones include {', '.join(prices.columns[:5])}"
        )
    return prices[list(tickers)]


def _fit_normalizer(kind: str, series: torch.Tensor, x: torch.Tensor, per_stock: int) -> Affine:
    """Per-sequence (offset, scale) for `kind`, from the stocks' whole series or each sequence's first day."""
    if kind == "first":
        first = x[:, :1, :]
        return Affine(first, first)
    low, high = series.min(dim=1).values, series.max(dim=1).values
    if kind == "minmax":
        offset, scale = low, high - low
    else:  # study: y = (x - min) / max, then y / (2 mean(y)), i.e. one affine map per stock
        offset, scale = low, high * 2 * ((series - low[:, None]) / high[:, None]).mean(dim=1)
    # Every sequence of a stock shares that stock's parameters.
    return Affine(offset.repeat_interleave(per_stock)[:, None, None], scale.repeat_interleave(per_stock)[:, None, None])


def _read_highs(csv_path: str | Path) -> pd.DataFrame:
    """The file as a long table: date, ticker, high; every problem with the file as a DataError."""
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"S&P 500 file not found: {path}; pass the path of all_stocks_5yr.csv (plain or .gz)")
    try:
        table = pd.read_csv(path)  # compression inferred from the name
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        OSError,
        EOFError,
        zlib.error,
    ) as error:  # OSError: bad gzip
        raise DataError(
            f"cannot read {path} as CSV ({str(error).splitlines()[0]}); expected {EXPECTED_LAYOUT}"
        ) from error
    ticker = next((c for c in TICKER_COLUMNS if c in table.columns), None)
    missing = [c for c in ("date", "high") if c not in table.columns] + ([] if ticker else ["Name/symbol"])
    if missing:
        raise DataError(f"{path} has no {' or '.join(missing)} column; expected {EXPECTED_LAYOUT}")

    high = pd.to_numeric(table["high"], errors="coerce")
    date = pd.to_datetime(table["date"], errors="coerce", format="mixed")
    for column, parsed in (("high", high), ("date", date)):
        bad = parsed.isna() & table[column].notna()
        if bad.any():
            line = int(np.flatnonzero(bad)[0]) + 2  # 1-based, after the header
            raise DataError(
                f"{path} line {line}: {column} {table[column][bad].iloc[0]!r} is not a valid {column}; fix or remove that row"
            )
    return pd.DataFrame({"date": date, "ticker": table[ticker].astype(str), "high": high})


def _period(highs: pd.DataFrame, csv_path, start: str, end: str) -> pd.DataFrame:
    """Wide table of highs (date x ticker) over the trading days in [start, end]; missing days are NaN."""
    highs = highs[(highs["date"] >= pd.Timestamp(start)) & (highs["date"] <= pd.Timestamp(end))]
    if highs.empty:
        raise DataError(f"{csv_path} has no prices between {start} and {end}; choose a period the file covers")
    repeated = highs[highs.duplicated(["date", "ticker"], keep=False)]
    conflicting = repeated.groupby(["date", "ticker"])["high"].nunique(dropna=False) > 1
    if conflicting.any():
        date, ticker = conflicting[conflicting].index[0]
        raise DataError(
            f"{csv_path} gives {ticker} two different highs on {date:%Y-%m-%d}; keep one row per stock and day"
        )
    highs = highs.drop_duplicates(["date", "ticker"], keep="last")  # exact repeats say nothing new
    return highs.pivot(index="date", columns="ticker", values="high").sort_index()


def _complete_stocks(prices: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep the stocks with a positive, finite price on every day of the period; return them and the dropped tickers."""
    complete = (np.isfinite(prices) & (prices > 0)).all()
    return prices.loc[:, complete], sorted(prices.columns[~complete])
