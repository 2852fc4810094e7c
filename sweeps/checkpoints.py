"""A trial's checkpoint: a folder with `model.pt` (model and optimiser state, model config, epoch, RNG state)
and `metrics.parquet` (every epoch so far). Read back with `torch.load(..., weights_only=True)`: a file that
carries pickled code is refused, not run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.parquet"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a plain tensor file; the message names it."""


def save(folder: str | Path, state: dict, model_config: dict, history: list[dict]) -> None:
    folder = Path(folder)
    torch.save({**state, "model_config": model_config}, folder / MODEL_FILE)
    pd.DataFrame(history).to_parquet(folder / METRICS_FILE, index=False)


def load(folder: str | Path) -> tuple[dict, list[dict]]:
    """(state for `fit(start=...)`, with its `model_config`; the metrics of every epoch so far)."""
    folder = Path(folder)
    try:
        state = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
        history = pd.read_parquet(folder / METRICS_FILE).to_dict("records")
    except Exception as error:  # truncated zip, pickled code, missing file: all mean "not this checkpoint"
        raise CheckpointError(f"cannot read checkpoint {folder}: {type(error).__name__}: {str(error).splitlines()[0]}") from error
    return state, history
