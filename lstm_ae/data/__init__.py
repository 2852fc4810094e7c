"""Data sets as `Splits`: synthetic signals, MNIST (rows or pixels) and S&P 500 daily highs."""

from lstm_ae.data.splits import DataError, Split, Splits, head

__all__ = ["DataError", "Split", "Splits", "head"]
