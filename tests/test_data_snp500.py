import numpy as np
import pandas as pd
import pytest
import torch

from lstm_ae.data import DataError, snp500
from tests.datafiles import business_days, stock_prices, write_stocks

TICKERS = ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH", "III", "JJJ")


@pytest.fixture(scope="module")
def prices():
    return stock_prices(TICKERS)


@pytest.mark.parametrize(
    "layout, name", [("kaggle", "all_stocks_5yr.csv"), ("course", "SP 500 Stock Prices 2014-2017.csv.gz")]
)
def test_both_layouts_plain_or_gzipped_give_the_same_splits(tmp_path, prices, layout, name):
    reference = snp500.load(write_stocks(tmp_path / "ref.csv", prices), seq_len=20)
    splits = snp500.load(write_stocks(tmp_path / name, prices, layout), seq_len=20)
    assert torch.equal(splits.train.x, reference.train.x)
    assert splits.meta["tickers"] == reference.meta["tickers"]


def test_sequences_split_by_stock(tmp_path, prices):
    splits = snp500.load(write_stocks(tmp_path / "s.csv", prices), seq_len=50, split=(0.6, 0.2, 0.2))
    days = business_days()
    per_stock = days // 50
    tickers = splits.meta["tickers"]
    assert [len(tickers[n]) for n in ("train", "val", "test")] == [6, 2, 2]
    assert set(tickers["train"]).isdisjoint(tickers["val"]) and set(tickers["val"]).isdisjoint(tickers["test"])
    assert sorted(sum(tickers.values(), [])) == list(TICKERS)
    assert splits.train.x.shape == (6 * per_stock, 50, 1) and splits.train.x.dtype == torch.float32
    assert splits.meta["sequences_per_stock"] == per_stock
    assert splits.meta["dates"][0] >= "2014-01-01" and splits.meta["dates"][-1] <= "2017-12-31"


@pytest.mark.parametrize("normalize", snp500.NORMALIZERS)
def test_normaliser_round_trip_gives_back_dollars(tmp_path, prices, normalize):
    path = write_stocks(tmp_path / "s.csv", prices)
    splits = snp500.load(path, seq_len=50, normalize=normalize)
    ticker = splits.meta["tickers"]["test"][1]
    per_stock = splits.meta["sequences_per_stock"]
    rows = slice(per_stock, 2 * per_stock)  # the second test stock's sequences
    dollars = splits.meta["normalizer"]["test"].invert(splits.test.x[rows], rows).reshape(-1)
    truth = prices[prices.ticker == ticker].set_index("date").loc["2014-01-01":"2017-12-31", "high"]
    assert np.allclose(dollars.numpy(), truth.to_numpy()[: len(dollars)], rtol=1e-5)


def test_normalisers_follow_their_definitions(tmp_path, prices):
    path = write_stocks(tmp_path / "s.csv", prices)
    stock = snp500.load(path, seq_len=business_days(), normalize="minmax").train.x[0, :, 0]
    assert stock.min() == 0 and stock.max() == pytest.approx(1)
    study = snp500.load(path, seq_len=business_days(), normalize="study").train.x[0, :, 0]
    assert study.mean() == pytest.approx(0.5, abs=1e-5) and study.min() == 0  # (x-min)/max / (2 mean)
    first = snp500.load(path, seq_len=10, normalize="first").train.x
    assert (first[:, 0] == 0).all()


def test_first_day_normaliser_uses_no_future(tmp_path, prices):
    path = write_stocks(tmp_path / "s.csv", prices)
    changed = prices.copy()
    changed.loc[changed.date > "2016-06-01", "high"] *= 3
    a = snp500.load(path, seq_len=10, normalize="first")
    b = snp500.load(write_stocks(tmp_path / "t.csv", changed), seq_len=10, normalize="first")
    assert torch.equal(a.train.x[:5], b.train.x[:5])  # sequences from early 2014 see nothing of mid-2016


def test_stocks_with_missing_days_are_dropped_and_counted(tmp_path, prices):
    holes = prices.drop(prices[(prices.ticker == "CCC") & (prices.date == "2015-03-02")].index)
    holes.loc[(holes.ticker == "DDD") & (holes.date == "2016-05-02"), "high"] = np.nan
    late = stock_prices(("NEW",), start="2015-01-01")  # listed in the middle of the period
    splits = snp500.load(write_stocks(tmp_path / "s.csv", pd.concat([holes, late])), seq_len=50)
    assert splits.meta["dropped"] == 3 and splits.meta["dropped_tickers"] == ["CCC", "DDD", "NEW"]
    assert len(sum(splits.meta["tickers"].values(), [])) == len(TICKERS) - 2


def test_whole_series_as_one_sequence(tmp_path, prices):
    splits = snp500.load(write_stocks(tmp_path / "s.csv", prices), seq_len=business_days())
    assert splits.train.x.shape == (6, business_days(), 1)


def test_series_gives_raw_highs_by_date(tmp_path, prices):
    frame = snp500.series(write_stocks(tmp_path / "s.csv", prices), tickers=("BBB", "AAA"))
    assert list(frame.columns) == ["BBB", "AAA"] and len(frame) == business_days()
    expected = prices[(prices.ticker == "AAA") & (prices.date == "2015-06-01")].high.item()
    assert frame.loc["2015-06-01", "AAA"] == pytest.approx(expected)


def test_unknown_ticker_is_named(tmp_path, prices):
    with pytest.raises(DataError, match="unknown ticker ZZZ"):
        snp500.series(write_stocks(tmp_path / "s.csv", prices), tickers=("AAA", "ZZZ"))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="not found: .*nowhere.csv"):
        snp500.load(tmp_path / "nowhere.csv")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "cannot read"),
        (b"\x1f\x8b\x08garbage", "cannot read"),
        (b"date,open,low,close,volume,Name\n2014-01-02,1,1,1,1,AAA\n", "no high column"),
        (b"date,open,high,low,close,volume\n2014-01-02,1,1,1,1,1\n", "no Name/symbol column"),
        (b"date,open,high,low,close,volume,Name\n2014-01-02,1,abc,1,1,1,AAA\n", "line 2: high 'abc'"),
    ],
)
def test_malformed_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / ("bad.csv.gz" if content.startswith(b"\x1f\x8b") else "bad.csv")
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        snp500.load(path)


def test_bad_arguments(tmp_path, prices):
    path = write_stocks(tmp_path / "s.csv", prices)
    with pytest.raises(ValueError, match="unknown normaliser"):
        snp500.load(path, normalize="zscore")
    with pytest.raises(ValueError, match="longer than"):
        snp500.load(path, seq_len=5000)


def test_head_cuts_the_normaliser_with_the_sequences(tmp_path, prices):
    from lstm_ae.data import head

    splits = snp500.load(write_stocks(tmp_path / "s.csv", prices), seq_len=50)
    small = head(splits, train=7, val=3, test=2)
    assert len(small.test) == 2 and len(small.meta["normalizer"]["test"]) == 2
    assert torch.equal(
        small.meta["normalizer"]["test"].invert(small.test.x),
        splits.meta["normalizer"]["test"].invert(splits.test.x)[:2],
    )
    assert small.meta["tickers"] == splits.meta["tickers"]  # per stock, not per sequence: kept whole
    # Copies, not views: shipping a cut must not ship the whole data it was cut from.
    assert small.train.x.untyped_storage().nbytes() == small.train.x.nbytes


def test_prices_that_cannot_make_a_split_are_named(tmp_path, prices):
    two = prices[prices.ticker.isin(["AAA", "BBB"])]
    with pytest.raises(DataError, match=r"2 complete stock\(s\) .* cannot make a train/validation/test split"):
        snp500.load(write_stocks(tmp_path / "two.csv", two), seq_len=50)
    dead = prices.assign(high=-prices.high)
    with pytest.raises(DataError, match="none of its 10 stocks has a positive, finite price"):
        snp500.load(write_stocks(tmp_path / "dead.csv", dead), seq_len=50)
    infinite = prices.copy()
    infinite.loc[infinite.ticker == "AAA", "high"] = np.inf
    assert "AAA" in snp500.load(write_stocks(tmp_path / "inf.csv", infinite), seq_len=50).meta["dropped_tickers"]


def test_a_stock_with_two_prices_on_one_day_is_named_and_exact_repeats_are_dropped(tmp_path, prices):
    row = prices[(prices.ticker == "BBB") & (prices.date == "2015-03-02")]
    repeated = snp500.load(write_stocks(tmp_path / "same.csv", pd.concat([prices, row])), seq_len=50)
    assert torch.equal(repeated.train.x, snp500.load(write_stocks(tmp_path / "ref.csv", prices), seq_len=50).train.x)
    with pytest.raises(DataError, match="gives BBB two different highs on 2015-03-02"):
        snp500.load(write_stocks(tmp_path / "two.csv", pd.concat([prices, row.assign(high=row.high + 1)])), seq_len=50)
