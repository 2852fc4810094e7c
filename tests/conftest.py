import pytest

from tests.datafiles import stock_prices, write_mnist, write_stocks


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def stocks_csv(tmp_path_factory):
    return write_stocks(tmp_path_factory.mktemp("snp500") / "all_stocks_5yr.csv", stock_prices())
