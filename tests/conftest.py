import pytest

from sweeps.cluster import keep_ray_local
from tests.datafiles import stock_prices, write_mnist, write_stocks

# Before any test imports Ray: no usage reports, and every Ray the tests start binds to 127.0.0.1 only.
keep_ray_local(None)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def stocks_csv(tmp_path_factory):
    tickers = ("AMZN", "GOOGL", "AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH")
    return write_stocks(tmp_path_factory.mktemp("snp500") / "all_stocks_5yr.csv", stock_prices(tickers))
