"""Forecasts from a model with a next-step predictor, and the persistence baseline to beat.

one_step(model, x)[:, t]          # the model's estimate of x[:, t + 1], having seen x[:, : t + 1]
multi_step(model, x, observed=26) # x[:, 26:] predicted from x[:, :26] and the model's own outputs
persistence(x), persistence(x, observed=26)   # the same two forecasts by "tomorrow = today"
"""

from __future__ import annotations

import torch

from lstm_ae.model import LSTMAutoencoder


@torch.no_grad()
def one_step(model: LSTMAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """(N, T, F): element t predicts x[:, t + 1] (the last one looks past the end of the sequence)."""
    model.eval()
    prediction = model(x).prediction
    if prediction is None:
        raise ValueError("one_step needs a model built with predict_next=True")
    return prediction


@torch.no_grad()
def multi_step(model: LSTMAutoencoder, x: torch.Tensor, observed: int) -> torch.Tensor:
    """(N, T - observed, F): x[:, observed:] predicted from x[:, :observed] alone, one step at a time."""
    _check_observed(x, observed)
    model.eval()
    return model.roll_forward(x[:, :observed], steps=x.shape[1] - observed)


def persistence(x: torch.Tensor, observed: int | None = None) -> torch.Tensor:
    """Tomorrow = today. Without `observed`, aligned with `one_step`; with it, aligned with `multi_step`."""
    if observed is None:
        return x.clone()
    _check_observed(x, observed)
    return x[:, observed - 1 : observed].expand(-1, x.shape[1] - observed, -1).clone()


def _check_observed(x: torch.Tensor, observed: int) -> None:
    if not 0 < observed < x.shape[1]:
        raise ValueError(
            f"observed must be between 1 and {x.shape[1] - 1} for sequences of {x.shape[1]} steps, got {observed}"
        )
