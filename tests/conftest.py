import os

# Before anything imports Ray: no usage reports, and every Ray the tests start binds to 127.0.0.1 only.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest

from tests.datafiles import stock_prices, write_mnist, write_stocks


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def stocks_csv(tmp_path_factory):
    tickers = ("AMZN", "GOOGL", "AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH")
    return write_stocks(tmp_path_factory.mktemp("snp500") / "all_stocks_5yr.csv", stock_prices(tickers))
